"""Benchmark StochCA fine-tuning against plain fine-tuning of the same ViT.

Both models are an mmpretrain ``ImageClassifier`` (ViT + linear head) with
the same weights; StochCA wraps the backbone (its teacher a frozen copy).
Measured in one run,
the two models taking turns step by step (timings and inference alike):

- train step (forward, backward, AdamW step): mean time over ``--steps``
  steps after ``--warmup``, StochCA drawing its blocks at random with
  ``--p`` (the mean is the expected cost of the draws; the mean number of
  cross-attention blocks and the mean teacher depth are reported);
- peak memory of one train step (CPU: the profiler's memory timeline;
  CUDA: ``max_memory_allocated``, above what was allocated before), plain
  and StochCA with its costliest single draw (cross-attention in the last
  block only, so the teacher runs to full depth) and with every block drawn;
- inference (eval-mode forward, no grad): median time.

    python tools/analysis_tools/benchmark_stoch_ca.py --arch deit-small
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import xattn_mm.cls  # noqa: F401  (registers StochCA)

sys.path.insert(0, str(Path(__file__).parent))
from benchmark_indirect_attention import (  # noqa: E402
    interleaved_inference_ms,
    interleaved_times,
    peak_memory,
)


def build(arch: str, size: int, p: float, device) -> torch.nn.Module:
    vit = dict(type='VisionTransformer', arch=arch, img_size=size)
    backbone = vit if p is None else dict(type='StochCA', p=p, backbone=vit)
    torch.manual_seed(0)
    model = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=backbone,
            head=dict(
                type='LinearClsHead',
                num_classes=100,
                in_channels=MODELS.build(vit).embed_dims,
            ),
        )
    )
    model.init_weights()
    return model.to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='deit-small', help='ViT arch')
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--p', type=float, default=0.1)
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    plain = build(args.arch, args.size, None, device)
    stoch = build(args.arch, args.size, args.p, device)
    stoch.backbone.backbone.load_state_dict(plain.backbone.state_dict())
    stoch.head.load_state_dict(plain.head.state_dict())
    stoch.backbone.build_teacher()
    gen = torch.Generator().manual_seed(1)
    inputs = torch.randn(
        args.batch, 3, args.size, args.size, generator=gen
    ).to(device)
    # mode='loss' skips the data preprocessor: the labels move here.
    samples = [
        DataSample().set_gt_label(i % 100).to(device)
        for i in range(args.batch)
    ]

    def train_step(model, optimizer):
        def step():
            losses = model(inputs, samples, mode='loss')
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()

        return step

    models = dict(plain=plain, stoch_ca=stoch)
    results, steps = {}, {}
    for name, model in models.items():
        model.train()
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=1e-5
        )
        steps[name] = train_step(model, optimizer)
        results[name] = dict(optimizer=optimizer)
    drawn, depth = [], []

    def record_draw(name):
        if name == 'stoch_ca':
            blocks = stoch.backbone.last_draw.nonzero().flatten().tolist()
            drawn.append(len(blocks))
            depth.append(max(blocks) + 1 if blocks else 0)

    # The two models take turns step by step (see interleaved_times).
    train = interleaved_times(
        steps, device, args.warmup, args.steps, after=record_draw
    )
    infer = interleaved_inference_ms(
        models, inputs, device, args.warmup, max(3, args.steps // 2)
    )
    for name, model in models.items():
        model.train()
        results[name].update(
            train_ms=statistics.mean(train[name]), infer_ms=infer[name]
        )
    results['stoch_ca'].update(drawn=drawn, depth=depth)

    layers = stoch.backbone.num_layers
    memory = {}
    plain.train()
    memory['plain'] = peak_memory(
        train_step(plain, results['plain']['optimizer']), device
    )
    for label, mask in (
        (
            'stoch_ca, last block only',
            [i == layers - 1 for i in range(layers)],
        ),
        ('stoch_ca, every block', [True] * layers),
    ):
        draw = torch.tensor(mask)
        stoch.backbone.draw_blocks = lambda batch_size, d=draw: d
        memory[label] = peak_memory(
            train_step(stoch, results['stoch_ca']['optimizer']), device
        )
    del stoch.backbone.draw_blocks

    base = results['plain']
    ours = results['stoch_ca']
    print(
        f'{args.arch} at {args.size} px, batch {args.batch}, {layers} blocks, '
        f'p = {args.p}, {args.steps} train steps after {args.warmup} '
        f'warm-up, device {device}, {args.threads} threads'
    )
    print(
        f'cross-attention blocks per step: mean '
        f'{statistics.mean(ours["drawn"]):.2f}; teacher depth: mean '
        f'{statistics.mean(ours["depth"]):.2f} of {layers}; steps without '
        f'teacher: {ours["depth"].count(0)}/{args.steps}'
    )
    print('| model | train step (ms) | ratio | inference (ms) | ratio |')
    print('| --- | --- | --- | --- | --- |')
    for name, r in (('plain fine-tuning', base), ('StochCA', ours)):
        print(
            f'| {name} | {r["train_ms"]:.1f} | '
            f'{r["train_ms"] / base["train_ms"]:.2f}x | {r["infer_ms"]:.1f} '
            f'| {r["infer_ms"] / base["infer_ms"]:.2f}x |'
        )
    print('| train step | peak memory (MiB) | ratio |')
    print('| --- | --- | --- |')
    for label, mib in memory.items():
        print(f'| {label} | {mib:.1f} | {mib / memory["plain"]:.2f}x |')


if __name__ == '__main__':
    main()
