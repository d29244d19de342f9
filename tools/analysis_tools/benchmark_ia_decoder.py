"""Benchmark the IA-DETR decoder against the double cross-attention decoder.

Both are built from mmdet's registry with the same layer settings; each
measures one forward + backward pass (median time over ``--repeats`` after
``--warmup``) and its peak memory (see ``benchmark_indirect_attention``).

    python tools/analysis_tools/benchmark_ia_decoder.py
"""

import argparse
import sys
from pathlib import Path

import torch
from mmdet.registry import MODELS
from torch import nn

import xattn_mm.det  # noqa: F401  (registers the decoders)

sys.path.insert(0, str(Path(__file__).parent))
from benchmark_indirect_attention import (  # noqa: E402
    add_shape_args,
    median_ms,
    peak_memory,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_shape_args(parser)
    parser.add_argument('--layers', type=int, default=6)
    parser.set_defaults(warmup=2, repeats=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    height, width = args.grid
    b, n, c = args.batch, height * width, args.dims
    layer_cfg = dict(
        self_attn_cfg=dict(embed_dims=c, num_heads=args.heads),
        cross_attn_cfg=dict(embed_dims=c, num_heads=args.heads),
    )

    def rand(*shape, grad=True):
        return torch.randn(*shape, device=device, requires_grad=grad)

    torch.manual_seed(0)
    inputs = dict(
        query=rand(b, args.queries, c),
        query_pos=rand(b, args.queries, c),
        memory=rand(b, n, c),
        exemplar_memory=rand(b, n, c),
        reference_points=torch.rand(b, args.queries, 4, device=device) * 0.5
        + 0.2,
        spatial_shape=(height, width),
        valid_ratios=torch.ones(b, 2, device=device),
        reg_branches=nn.ModuleList(
            [nn.Linear(c, 4) for _ in range(args.layers)]
        ).to(device),
        memory_pos=rand(b, n, c),
        exemplar_pos=rand(b, n, c),
    )
    print(
        f'device {device}, threads {args.threads}; B {b}, Q '
        f'{args.queries}, grid {height}x{width}, heads {args.heads}, '
        f'dims {c}, {args.layers} layers; forward + backward'
    )
    print('| decoder | parameters (M) | time (ms) | peak memory (MiB) |')
    print('| --- | --- | --- | --- |')
    results = {}
    for name in ('IADETRDecoder', 'DoubleCrossAttentionDecoder'):
        extra = (
            {'num_align_layers': args.layers}
            if name.startswith('Double')
            else {}
        )
        decoder = MODELS.build(
            dict(
                type=name, num_layers=args.layers, layer_cfg=layer_cfg, **extra
            )
        ).to(device)

        def step(decoder=decoder):
            decoder.zero_grad(set_to_none=True)
            hidden, refs = decoder(**inputs)
            (hidden.sum() + refs.sum()).backward()

        ms = median_ms(step, device, args.warmup, args.repeats)
        mib = peak_memory(step, device)
        params = sum(p.numel() for p in decoder.parameters()) / 1e6
        results[name] = (ms, mib)
        print(f'| {name} | {params:.2f} | {ms:.1f} | {mib:.1f} |')
    ia, double = (
        results['IADETRDecoder'],
        results['DoubleCrossAttentionDecoder'],
    )
    print(
        f'IADETRDecoder vs DoubleCrossAttentionDecoder: '
        f'{ia[0] / double[0]:.2f}x time, {ia[1] / double[1]:.2f}x memory'
    )


if __name__ == '__main__':
    main()
