"""The IA-DETR paper's decoder ablation (Sec. 6.2.1) at demo scale: the
three decoders, each with and without the exemplar-aware encoder, trained
on the embedded synthetic dataset with the demo's budget, then evaluated
under the protocol and the exemplar-swap control.

    python tools/analysis_tools/decoder_ablation.py \\
        --work-dir work_dirs/decoder_ablation [--variants ...] [--seed 0]

Each variant is ``configs/ia_detr/synthetic_oneshot.py`` (what ``make demo``
trains) with one change: ``model.decoder.type`` (``IADETRDecoder``;
``DoubleCrossAttentionDecoder`` with as many alignment layers as decoder
layers, the paper's two equal blocks; ``MisalignedAttentionDecoder``), and
``model.encoder=None`` for the variants without the encoder. Training and
evaluation are ``tools/train.py`` and ``one_shot_report.py``, run as
subprocesses; a finished variant (its ``one_shot_report.json`` exists) is
not run again. Prints the markdown table and writes ``decoder_ablation.md``
and ``decoder_ablation.json`` into the work dir. The data must exist
(``python tools/data/generate_synthetic_oneshot.py data/synthetic_oneshot``,
the first step of ``make demo``).
"""

import argparse
import json
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List

from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'ia_detr', 'synthetic_oneshot.py')
DECODERS = {
    'indirect': 'IADETRDecoder',
    'double-cross': 'DoubleCrossAttentionDecoder',
    'misaligned': 'MisalignedAttentionDecoder',
}
VARIANTS = [
    f'{name}{suffix}' for name in DECODERS for suffix in ('', '-no-encoder')
]
KEYS = ('oneshot/seen_AP50', 'oneshot/unseen_AP50')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/decoder_ablation')
    parser.add_argument(
        '--variants', nargs='+', default=VARIANTS, choices=VARIANTS
    )
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def overrides(variant: str, seed: int) -> List[str]:
    """``--cfg-options`` of a variant."""
    name = variant.replace('-no-encoder', '')
    options = [
        f'model.decoder.type={DECODERS[name]}',
        f'randomness.seed={seed}',
    ]
    if name == 'double-cross':
        layers = Config.fromfile(CONFIG).model.decoder.num_layers
        options.append(f'model.decoder.num_align_layers={layers}')
    if variant.endswith('-no-encoder'):
        options.append('model.encoder=None')
    return options


def run_variant(variant: str, work_dir: str, seed: int) -> dict:
    """Train and evaluate one variant; its report's rows and the time."""
    out = osp.join(work_dir, variant)
    report = osp.join(out, 'one_shot_report.json')
    if not osp.exists(report):
        start = time.time()
        options = overrides(variant, seed)
        subprocess.run(
            [sys.executable, osp.join(ROOT, 'tools', 'train.py'), CONFIG]
            + ['--work-dir', out, '--cfg-options', *options]
            + ['train_cfg.val_interval=1000'],
            check=True,
        )
        with open(osp.join(out, 'last_checkpoint')) as f:
            checkpoint = f.read().strip()
        subprocess.run(
            [
                sys.executable,
                osp.join(
                    ROOT, 'tools', 'analysis_tools', 'one_shot_report.py'
                ),
                CONFIG,
                checkpoint,
                '--work-dir',
                out,
                '--cfg-options',
                *options,
            ],
            check=True,
        )
        with open(osp.join(out, 'seconds.txt'), 'w') as f:
            f.write(f'{time.time() - start:.0f}\n')
    with open(report) as f:
        rows = json.load(f)
    with open(osp.join(out, 'seconds.txt')) as f:
        seconds = float(f.read())
    return dict(rows=rows, seconds=seconds)


def table(results: Dict[str, dict]) -> str:
    lines = [
        '| decoder | encoder | seen AP50 | unseen AP50 | swap seen | '
        'swap unseen | train + eval (s) |',
        '| --- | --- | --- | --- | --- | --- | --- |',
    ]
    for variant, result in results.items():
        protocol, swap = list(result['rows'].values())
        cells = [f'{100 * protocol[k]:.1f}' for k in KEYS]
        cells += [f'{100 * swap[k]:.1f}' for k in KEYS]
        name = variant.replace('-no-encoder', '')
        encoder = 'no' if variant.endswith('-no-encoder') else 'yes'
        lines.append(
            f'| {DECODERS[name]} | {encoder} | '
            + ' | '.join(cells)
            + f' | {result["seconds"]:.0f} |'
        )
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    results = {
        v: run_variant(v, args.work_dir, args.seed) for v in args.variants
    }
    text = table(results)
    print(text)
    with open(osp.join(args.work_dir, 'decoder_ablation.md'), 'w') as f:
        f.write(text + '\n')
    with open(osp.join(args.work_dir, 'decoder_ablation.json'), 'w') as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
