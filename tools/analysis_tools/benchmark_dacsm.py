"""Benchmark a DACSM (DAT) training step against a single-branch ViT step.

Both models share the ViT weights and a CSM head. Measured in one run,
the two models taking turns step by step (timings and inference alike):

- train step (forward, backward, SGD step): mean time over ``--steps``
  after ``--warmup``. The baseline is an ``ImageClassifier`` step on
  ``--batch`` source images; DACSM is a ``UDAClassifier`` paired step on
  ``--batch`` source and ``--batch`` target images (three branches, the
  beneficial noise on, the source zoomed by the CSM scales);
- peak memory of one train step (CPU: the profiler's memory timeline;
  CUDA: ``max_memory_allocated``);
- inference (eval-mode forward, no grad): median time; DACSM infers with
  the target branch, i.e. the plain ViT.

    python tools/analysis_tools/benchmark_dacsm.py --arch deit-small
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import xattn_mm.cls  # noqa: F401  (registers DAT, CSMHead, UDAClassifier)

sys.path.insert(0, str(Path(__file__).parent))
from benchmark_indirect_attention import (  # noqa: E402
    interleaved_inference_ms,
    interleaved_times,
    peak_memory,
)


def build(arch: str, size: int, uda: bool, device) -> torch.nn.Module:
    vit = dict(arch=arch, img_size=size, drop_path_rate=0.1)
    backbone = dict(vit, type='VisionTransformer')
    if uda:
        backbone = dict(vit, type='DAT', noise_std=0.1)
    head = dict(
        type='CSMHead',
        num_classes=12,
        in_channels=MODELS.build(
            dict(vit, type='VisionTransformer')
        ).embed_dims,
        num_subcenters=3,
    )
    torch.manual_seed(0)
    model = MODELS.build(
        dict(
            type='UDAClassifier' if uda else 'ImageClassifier',
            backbone=backbone,
            head=head,
        )
    )
    model.init_weights()
    return model.to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='deit-small', help='ViT arch')
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    plain = build(args.arch, args.size, False, device)
    dacsm = build(args.arch, args.size, True, device)
    dacsm.backbone.load_state_dict(plain.backbone.state_dict())
    dacsm.head.load_state_dict(plain.head.state_dict())
    gen = torch.Generator().manual_seed(1)

    def images():
        return torch.randn(
            args.batch, 3, args.size, args.size, generator=gen
        ).to(device)

    source, target = images(), images()
    # model.loss / mode='loss' skip the data preprocessor, the only step
    # that would move the samples to the device.
    labels = [
        DataSample().set_gt_label(i % 12).to(device) for i in range(args.batch)
    ]
    pseudo = []
    for i in range(args.batch):
        sample = DataSample()
        sample.set_field(torch.tensor([i % 12]), 'pseudo_label')
        pseudo.append(sample.to(device))

    def step_of(model, optimizer):
        if model is plain:
            inputs, samples = source, labels
        else:
            inputs = dict(source=source, target=target)
            samples = dict(source=labels, target=pseudo)

        def step():
            losses = model(inputs, samples, mode='loss')
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()

        return step

    models = dict(plain=plain, dacsm=dacsm)
    steps = {}
    for name, model in models.items():
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        steps[name] = step_of(model, optimizer)
    # The two models take turns step by step (see interleaved_times).
    train = interleaved_times(steps, device, args.warmup, args.steps)
    memory = {name: peak_memory(step, device) for name, step in steps.items()}
    infer = interleaved_inference_ms(
        models, target, device, args.warmup, max(3, args.steps)
    )
    results = {
        name: (statistics.mean(train[name]), memory[name], infer[name])
        for name in models
    }

    base = results['plain']
    print(
        f'{args.arch} at {args.size} px, batch {args.batch} (DACSM: '
        f'{args.batch} source + {args.batch} target), {args.steps} train '
        f'steps after {args.warmup} warm-up, device {device}, '
        f'{args.threads} threads'
    )
    print(
        '| model | train step (ms) | ratio | peak memory (MiB) | ratio '
        '| inference (ms) | ratio |'
    )
    print('| --- | --- | --- | --- | --- | --- | --- |')
    for label, name in (
        ('single-branch ViT', 'plain'),
        ('DACSM (DAT, 3 branches)', 'dacsm'),
    ):
        train_ms, mib, infer = results[name]
        print(
            f'| {label} | {train_ms:.1f} | {train_ms / base[0]:.2f}x | '
            f'{mib:.1f} | {mib / base[1]:.2f}x | {infer:.1f} | '
            f'{infer / base[2]:.2f}x |'
        )


if __name__ == '__main__':
    main()
