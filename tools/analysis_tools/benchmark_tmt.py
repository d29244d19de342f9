"""Benchmark a TMT training step (TMA neck + ACTE + frozen source model)
against the vanilla fine-tuning step (Feature2Pyramid neck).

Both segmentors are the shipped ViT-B/16 + UperNet protocol configs
(``configs/_base_/protocols/{finetune,tmt}_vit-base-p16-upernet.py``) with BN
in place of SyncBN and random weights; TMT starts from the vanilla weights, as
fine-tuning from the source checkpoint does. Measured in one run,
the two models taking turns step by step (timings and inference alike):

- train step (forward, backward, AdamW step): mean over ``--steps`` after
  ``--warmup``;
- peak memory of one train step (CPU: the profiler's memory timeline;
  CUDA: ``max_memory_allocated``);
- inference (eval mode, no grad, whole image): median time; TMT infers
  without the source model (``test_with_source=False``).

    python tools/analysis_tools/benchmark_tmt.py --size 512 --batch 2
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch
from mmengine.config import Config, ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import xattn_mm.seg  # noqa: F401  (registers TMANeck, ACTE, the segmentor)

sys.path.insert(0, str(Path(__file__).parent))
from benchmark_indirect_attention import (  # noqa: E402
    interleaved_inference_ms,
    interleaved_times,
    peak_memory,
)

PROTOCOLS = Path(__file__).resolve().parents[2] / 'configs/_base_/protocols'


def build(name: str, size: int, mode: str, device) -> torch.nn.Module:
    cfg = Config.fromfile(str(PROTOCOLS / f'{name}_vit-base-p16-upernet.py'))
    model = cfg.model
    bn = dict(type='BN', requires_grad=True)
    model.backbone.update(img_size=(size, size), init_cfg=None)
    model.decode_head.norm_cfg = bn
    model.auxiliary_head.norm_cfg = bn
    if model.neck.type == 'TMANeck':
        model.neck.update(pyramid_norm_cfg=bn, mode=mode)
    else:
        model.neck.norm_cfg = bn
    model.test_cfg = ConfigDict(mode='whole')
    torch.manual_seed(0)
    segmentor = MODELS.build(model)
    segmentor.init_weights()
    return segmentor.to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, default=512)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--mode', default='bias', help='TMA mode')
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    init_default_scope('mmseg')

    vanilla = build('finetune', args.size, args.mode, device)
    tmt = build('tmt', args.size, args.mode, device)
    result = tmt.load_state_dict(vanilla.state_dict(), strict=False)
    assert all(k.startswith('neck.blocks.') for k in result.missing_keys)
    tmt.build_source_model()

    gen = torch.Generator().manual_seed(1)
    size = args.size
    inputs = torch.randn(args.batch, 3, size, size, generator=gen).to(device)
    samples = []
    for _ in range(args.batch):
        sample = SegDataSample()
        labels = torch.randint(0, 19, (1, size, size), generator=gen)
        sample.gt_sem_seg = PixelData(data=labels.to(device))
        shape = (size, size)
        sample.set_metainfo(
            dict(img_shape=shape, ori_shape=shape, pad_shape=shape)
        )
        samples.append(sample)

    models = dict(vanilla=vanilla, tmt=tmt)
    steps = {}
    for name, model in models.items():
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step(model=model, optimizer=optimizer):
            losses = model(inputs, samples, mode='loss')
            loss = sum(v for k, v in losses.items() if 'loss' in k)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        steps[name] = step
    # The two models take turns step by step (see interleaved_times).
    train = interleaved_times(steps, device, args.warmup, args.steps)
    memory = {name: peak_memory(step, device) for name, step in steps.items()}
    infer = interleaved_inference_ms(
        models, inputs, device, args.warmup, max(3, args.steps)
    )
    results = {
        name: (statistics.mean(train[name]), memory[name], infer[name])
        for name in models
    }

    base = results['vanilla']
    print(
        f'ViT-B/16 + UperNet at {size} px, batch {args.batch}, TMA mode '
        f'{args.mode}, {args.steps} train steps after {args.warmup} '
        f'warm-up, device {device}, {args.threads} threads'
    )
    print(
        '| model | train step (ms) | ratio | peak memory (MiB) | ratio '
        '| inference (ms) | ratio |'
    )
    print('| --- | --- | --- | --- | --- | --- | --- |')
    for label, name in (
        ('vanilla (Feature2Pyramid)', 'vanilla'),
        ('TMT (TMA neck + ACTE + source model)', 'tmt'),
    ):
        train_ms, mib, infer = results[name]
        print(
            f'| {label} | {train_ms:.1f} | {train_ms / base[0]:.2f}x | '
            f'{mib:.1f} | {mib / base[1]:.2f}x | {infer:.1f} | '
            f'{infer / base[2]:.2f}x |'
        )


if __name__ == '__main__':
    main()
