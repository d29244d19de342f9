"""Benchmark the indirect-attention layer against explicit-softmax layers.

Same weights and inputs for every variant; each measures one forward +
backward pass (median time over ``--repeats`` after ``--warmup``, the
variants taking turns within each repeat) and the
peak memory it allocates above what the inputs and weights already hold
(CUDA: ``max_memory_allocated``; CPU: the profiler's memory timeline).

Variants:
- ``xattn_mm``: :class:`xattn_mm.core.IndirectAttention` (axial BoxRPB,
  ``scaled_dot_product_attention``).
- ``explicit_dense``: the BoxRPB MLPs evaluated on every (query, pixel) pair
  into a dense bias, explicit softmax.
- ``explicit_axial``: the official Plain-DETR / IA-DETR formulation: axial
  MLPs, the dense bias summed from them, explicit softmax.

    python tools/analysis_tools/benchmark_indirect_attention.py
"""

import argparse
import json
import math
import statistics
import tempfile
import time
from typing import Callable, Dict, Optional

import torch
from torch.profiler import ProfilerActivity, profile

from xattn_mm.core import IndirectAttention
from xattn_mm.core.box_rpb import box_edge_deltas


def explicit_layer(layer: IndirectAttention, dense_mlp: bool) -> Callable:
    """An explicit-softmax forward with ``layer``'s weights."""
    attn, rpb = layer.attn, layer.box_rpb

    def forward(
        query,
        key,
        value,
        spatial_shape,
        stride,
        query_pos,
        key_pos,
        value_pos,
        reference_boxes,
    ):
        height, width = spatial_shape
        dy, dx = box_edge_deltas(
            reference_boxes, spatial_shape, stride, rpb.delta_mode
        )
        if dense_mlp:
            # Every (query, row, col) pair through both MLPs.
            b, q = dx.shape[:2]
            dx = dx[:, :, None].expand(b, q, height, width, 2)
            dy = dy[:, :, :, None].expand(b, q, height, width, 2)
            bias = (rpb.x_mlp(dx) + rpb.y_mlp(dy)).flatten(2, 3)
        else:
            bias = (
                rpb.x_mlp(dx)[:, :, None] + rpb.y_mlp(dy)[:, :, :, None]
            ).flatten(2, 3)
        bias = bias.permute(0, 3, 1, 2)
        heads = attn.num_heads
        q = attn.q_proj(query + query_pos).unflatten(-1, (heads, -1))
        k = attn.k_proj(key + key_pos).unflatten(-1, (heads, -1))
        v = attn.v_proj(value + value_pos).unflatten(-1, (heads, -1))
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias
        out = torch.softmax(logits, -1) @ v
        return attn.out_proj(out.transpose(1, 2).flatten(2))

    return forward


def peak_memory(step: Callable, device: torch.device) -> float:
    """MiB allocated at the peak of ``step()`` above the start."""
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - start) / 2**20
    with profile(
        activities=[ProfilerActivity.CPU],
        profile_memory=True,
        record_shapes=True,
        with_stack=True,
    ) as prof:
        step()
    with tempfile.NamedTemporaryFile(suffix='.json') as f:
        prof.export_memory_timeline(f.name, device='cpu')
        _, sizes = json.load(open(f.name))
    totals = [sum(s) for s in sizes]
    return (max(totals) - totals[0]) / 2**20


def median_ms(
    step: Callable, device: torch.device, warmup: int, repeats: int
) -> float:
    """Median time (ms) of ``repeats`` calls of ``step`` after ``warmup``."""
    times = interleaved_times(dict(step=step), device, warmup, repeats)
    return statistics.median(times['step'])


def interleaved_times(
    steps: Dict[str, Callable],
    device: torch.device,
    warmup: int,
    repeats: int,
    after: Optional[Callable[[str], None]] = None,
) -> Dict[str, list]:
    """Times (ms) of ``repeats`` calls of each step after ``warmup``, the
    steps run in turn within every repeat so that a slow phase of the
    machine slows all of them alike; ``after(name)`` runs after each timed
    call, outside the timing."""
    times: Dict[str, list] = {name: [] for name in steps}
    for i in range(warmup + repeats):
        for name, step in steps.items():
            if device.type == 'cuda':
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if device.type == 'cuda':
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
                if after is not None:
                    after(name)
    return times


def interleaved_median_ms(
    steps: Dict[str, Callable],
    device: torch.device,
    warmup: int,
    repeats: int,
) -> Dict[str, float]:
    """Median of :func:`interleaved_times` for each step."""
    times = interleaved_times(steps, device, warmup, repeats)
    return {name: statistics.median(t) for name, t in times.items()}


def interleaved_inference_ms(
    models: Dict[str, torch.nn.Module],
    inputs,
    device: torch.device,
    warmup: int,
    repeats: int,
) -> Dict[str, float]:
    """Median eval-mode, no-grad ``model(inputs, mode='tensor')`` time of
    each model, the models taking turns; they are left in eval mode."""
    for model in models.values():
        model.eval()
    with torch.no_grad():
        return interleaved_median_ms(
            {
                name: lambda m=model: m(inputs, mode='tensor')
                for name, model in models.items()
            },
            device,
            warmup,
            repeats,
        )


def add_shape_args(parser: argparse.ArgumentParser) -> None:
    """Shapes, repetitions and device shared by the IA-DETR benchmarks."""
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--queries', type=int, default=300)
    parser.add_argument('--grid', type=int, nargs=2, default=[32, 32])
    parser.add_argument('--heads', type=int, default=8)
    parser.add_argument('--dims', type=int, default=256)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu'
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_shape_args(parser)
    parser.add_argument(
        '--variants',
        nargs='+',
        default=['explicit_dense', 'explicit_axial', 'xattn_mm'],
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    layer = IndirectAttention(args.dims, args.heads).to(device)
    height, width = args.grid
    b, n = args.batch, height * width

    def rand(*shape):
        return torch.randn(*shape, device=device, requires_grad=True)

    inputs = dict(
        query=rand(b, args.queries, args.dims),
        key=rand(b, n, args.dims),
        value=rand(b, n, args.dims),
        spatial_shape=(height, width),
        stride=16.0,
        query_pos=rand(b, args.queries, args.dims),
        key_pos=rand(b, n, args.dims),
        value_pos=rand(b, n, args.dims),
        reference_boxes=torch.cat(
            [
                torch.rand(b, args.queries, 2, device=device) * 0.6 + 0.2,
                torch.rand(b, args.queries, 2, device=device) * 0.3 + 0.05,
            ],
            -1,
        ),
    )
    forwards: Dict[str, Callable] = dict(
        xattn_mm=layer,
        explicit_dense=explicit_layer(layer, dense_mlp=True),
        explicit_axial=explicit_layer(layer, dense_mlp=False),
    )
    reference = forwards['explicit_axial'](**inputs)
    print(
        f'device {device}, threads {args.threads}; B {b}, Q '
        f'{args.queries}, grid {height}x{width}, heads {args.heads}, '
        f'dims {args.dims}; forward + backward'
    )
    print('| variant | time (ms) | peak memory (MiB) | max abs diff |')
    print('| --- | --- | --- | --- |')
    steps = {}
    for name in args.variants:

        def step(forward=forwards[name]):
            layer.zero_grad(set_to_none=True)
            forward(**inputs).sum().backward()

        steps[name] = step
    times = interleaved_median_ms(steps, device, args.warmup, args.repeats)
    results = {}
    for name, step in steps.items():
        with torch.no_grad():
            diff = (forwards[name](**inputs) - reference).abs().max().item()
        ms, mib = times[name], peak_memory(step, device)
        results[name] = (ms, mib)
        print(f'| {name} | {ms:.1f} | {mib:.1f} | {diff:.1e} |')
    if 'xattn_mm' in results:
        ours = results['xattn_mm']
        for name, (ms, mib) in results.items():
            if name != 'xattn_mm':
                print(
                    f'xattn_mm vs {name}: {ms / ours[0]:.2f}x faster, '
                    f'{ours[1] / mib:.2f}x memory'
                )


if __name__ == '__main__':
    main()
