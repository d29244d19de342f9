"""Evaluate a one-shot detector under the protocol and under the exemplar-swap
control, print the seen / unseen AP50 table and save a picture of predictions.

    python tools/analysis_tools/one_shot_report.py CONFIG CHECKPOINT \\
        --work-dir work_dirs/demo

The control keeps every test image and its ground truth but shows an exemplar
of another class (``OneShotDataset(exemplar_swap=True)``): a model that uses
the exemplar scores far lower under it.
"""

import argparse
import json
import os
import os.path as osp
import sys
from typing import Dict, List

import numpy as np

from xattn_mm.engine import trust_checkpoint
from xattn_mm.engine.tool_utils import (
    add_common_args,
    add_trust_arg,
    build_runner,
    load_config,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', required=True, help='output directory')
    add_common_args(parser)
    parser.add_argument(
        '--draws',
        type=int,
        nargs='+',
        default=None,
        help="exemplar draws (default: the config's)",
    )
    parser.add_argument(
        '--num-pictures',
        type=int,
        default=6,
        help='unseen-class pairs drawn into predictions.png',
    )
    parser.add_argument(
        '--score-thr', type=float, default=0.3, help='drawn boxes score'
    )
    add_trust_arg(parser, 'CHECKPOINT')
    return parser.parse_args(argv)


def _test_cfg(args: argparse.Namespace, swap: bool, name: str):
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    cfg.work_dir = osp.join(args.work_dir, name)
    dataset = cfg.test_dataloader.dataset
    if dataset.get('type') != 'OneShotDataset':
        raise ValueError(
            'test_dataloader.dataset must be a OneShotDataset, got '
            f'{dataset.get("type")!r}.'
        )
    dataset.test_classes = 'all'
    dataset.exemplar_swap = swap
    if args.draws is not None:
        dataset.draws = args.draws
    return cfg


def _table(rows: Dict[str, Dict[str, float]]) -> str:
    lines = [
        '| exemplars | seen AP50 | unseen AP50 |',
        '| --- | --- | --- |',
    ]
    for name, metrics in rows.items():
        cells = [
            f'{100 * metrics[key]:.1f}' if key in metrics else 'n/a'
            for key in ('oneshot/seen_AP50', 'oneshot/unseen_AP50')
        ]
        lines.append(f'| {name} | {cells[0]} | {cells[1]} |')
    return '\n'.join(lines)


def _rescale_boxes(sample, scale: float) -> None:
    for key in ('gt_instances', 'pred_instances'):
        if key in sample and 'bboxes' in sample.get(key):
            boxes = sample.get(key).bboxes
            if hasattr(boxes, 'rescale_'):
                boxes.rescale_((scale, scale))
            else:
                sample.get(key).bboxes = boxes * scale


def _pictures(
    runner, num: int, score_thr: float, out_file: str, min_side: int = 320
) -> None:
    """Draw the first ``num`` unseen-class pairs (each on a different image)
    and stack them, enlarging images smaller than ``min_side``."""
    import mmcv
    import torch
    from mmdet.registry import VISUALIZERS
    from mmengine.dataset import pseudo_collate

    dataset = runner.test_dataloader.dataset
    unseen = {
        dataset.metainfo['classes'].index(c)
        for c in dataset.metainfo['unseen_classes']
    }
    picks: List[int] = []
    seen_images = set()
    for i, (_, idx, label) in enumerate(dataset.samples):
        if label in unseen and idx not in seen_images:
            picks.append(i)
            seen_images.add(idx)
        if len(picks) == num:
            break
    if not picks:
        return
    vis_cfg = dict(type='OneShotDetLocalVisualizer', name='one_shot_report')
    visualizer = VISUALIZERS.build(vis_cfg)
    meta = dict(dataset.metainfo)
    visualizer.dataset_meta = dict(
        classes=meta['classes'], palette=meta.get('palette')
    )
    model = runner.model
    model.eval()
    tiles = []
    for i in picks:
        batch = model.data_preprocessor(pseudo_collate([dataset[i]]), False)
        with torch.no_grad():
            sample = model(**batch, mode='predict')[0]
        img = mmcv.imread(sample.img_path, channel_order='rgb')
        # Small images are drawn enlarged so that the labels stay legible.
        scale = max(1, int(np.ceil(min_side / min(img.shape[:2]))))
        if scale > 1:
            img = mmcv.imrescale(img, scale, interpolation='nearest')
            _rescale_boxes(sample, scale)
        visualizer.add_datasample(
            'pair',
            img,
            sample,
            draw_gt=True,
            draw_pred=True,
            pred_score_thr=score_thr,
            out_file=None,
        )
        tiles.append(visualizer.get_image())
    height = max(t.shape[0] for t in tiles)
    padded = [
        np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0))) for t in tiles
    ]
    mmcv.imwrite(np.concatenate(padded, 0)[..., ::-1], out_file)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    if args.trust_checkpoint:
        trust_checkpoint(args.checkpoint)
    rows, runners = {}, []
    for name, swap in (
        ('protocol (exemplar of the class)', False),
        ('exemplar-swap control', True),
    ):
        runner = build_runner(_test_cfg(args, swap, name.split()[0]))
        rows[name] = runner.test()
        runners.append(runner)
    table = _table(rows)
    print(table)
    with open(osp.join(args.work_dir, 'one_shot_report.md'), 'w') as f:
        f.write(table + '\n')
    with open(osp.join(args.work_dir, 'one_shot_report.json'), 'w') as f:
        json.dump(rows, f, indent=2)
    picture = osp.join(args.work_dir, 'predictions.png')
    _pictures(runners[0], args.num_pictures, args.score_thr, picture)
    print(f'predictions: {picture}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
