"""Kill training with SIGKILL at a random iteration, resume it with
``--resume`` (auto), and compare its final weights with an uninterrupted
run's, bit for bit.

    python tools/analysis_tools/resume_check.py [--kills 3]
        [--models detr stoch_ca] [--nprocs 1 2] [--seed 0]
        [--work-dir work_dirs/resume_check]

Two models with randomness in every step, shrunk to run on the CPU:
mmdet's stock DETR (dropout 0.1 in every transformer layer, random flips)
and StochCA with p 0.1 on the DomainBed protocol (cross-attention draws,
random crops, flips, colour jitter and grayscale). Each trains 8
iterations, a checkpoint after every one, in 1 or 2 processes (gloo). A
kill lands a random time after a random iteration's checkpoint appeared,
so it can hit a step or a checkpoint being written. Prints a table and
writes ``resume_check.json`` into the work_dir. The figures of
docs/reliability.md come from this script.
"""

import argparse
import json
import os
import os.path as osp
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List

import torch

from xattn_mm.cls.testing import write_tiny_vit_checkpoint
from xattn_mm.testing import make_coco_detection, make_multi_domain_folder
from xattn_mm.testing.configs import multi_domain_leaf, write_shrunk_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ITERS = 8
CONTROL: List[str] = []  # --cfg-options of the --without-random-state runs
# max_keep_ckpts=-1: mmengine's CheckpointHook deletes the oldest checkpoint
# before it writes the new one, so a kill between the two leaves none to
# resume from (docs/reliability.md); the check measures resume, not that.
HOOKS = """
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1,
                    max_keep_ckpts=-1),
    finite_loss=dict(type='FiniteLossHook'),
    random_state=dict(type='RandomStateHook'),
)
log_processor = dict(by_epoch=False, window_size=1)
randomness = dict(seed=0)
"""

DETR = (
    """_base_ = 'mmdet::detr/detr_r50_8xb2-150e_coco.py'
custom_imports = dict(imports=['xattn_mm.det'], allow_failed_imports=False)
classes = ('square', 'disk')
dims = 32
attn = dict(embed_dims=dims, num_heads=4, dropout=0.1, batch_first=True)
ffn = dict(embed_dims=dims, feedforward_channels=64, ffn_drop=0.1)
model = dict(
    num_queries=10,
    backbone=dict(depth=18, base_channels=16, init_cfg=None),
    neck=dict(in_channels=[128], out_channels=dims),
    encoder=dict(num_layers=1, layer_cfg=dict(self_attn_cfg=attn,
                                              ffn_cfg=ffn)),
    decoder=dict(num_layers=2, layer_cfg=dict(
        self_attn_cfg=attn, cross_attn_cfg=attn, ffn_cfg=ffn)),
    positional_encoding=dict(num_feats=dims // 2),
    bbox_head=dict(num_classes=len(classes), embed_dims=dims),
)
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root='{data}/',
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='images/train/'),
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True),
            dict(type='RandomFlip', prob=0.5),
            dict(type='Resize', scale=(80, 64), keep_ratio=True),
            dict(type='PackDetInputs'),
        ],
    ),
)
val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = None
test_evaluator = None
test_cfg = None
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters={iters})
param_scheduler = []
"""
    + HOOKS
)

STOCH_CA_BASE = osp.join(
    ROOT,
    'configs/stoch_ca/domain_generalization/'
    'stochca_vit-base-p16_1xb32-5001it_pacs-sketch.py',
)  # p = 0.1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--kills', type=int, default=3, help='per setting')
    parser.add_argument(
        '--models',
        nargs='+',
        default=['detr', 'stoch_ca'],
        choices=['detr', 'stoch_ca'],
    )
    parser.add_argument('--nprocs', nargs='+', type=int, default=[1, 2])
    parser.add_argument('--seed', type=int, default=0, help='kill points')
    parser.add_argument('--work-dir', default='work_dirs/resume_check')
    parser.add_argument(
        '--without-random-state',
        action='store_true',
        help="the control: RandomStateHook off (mmengine's own resume)",
    )
    return parser.parse_args()


def write_config(model: str, work_dir: str) -> str:
    data = osp.join(work_dir, 'data', model)
    if model == 'detr':
        make_coco_detection(data, split='train', num_images=8, seed=0)
        text = DETR.format(data=data, iters=ITERS)
    else:
        make_multi_domain_folder(data, images_per_class=4)
        pretrained = osp.join(work_dir, 'pretrained_vit.pth')
        write_tiny_vit_checkpoint(pretrained)
        base = write_shrunk_config(
            STOCH_CA_BASE, osp.join(work_dir, 'stoch_ca_shrunk.py'), pretrained
        )
        text = (
            multi_domain_leaf(base, data)
            + HOOKS
            + f'train_cfg = dict(max_iters={ITERS}, val_interval=1000)\n'
        )
    path = osp.join(work_dir, f'{model}_tiny.py')
    with open(path, 'w') as f:
        f.write(text)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def train_command(config: str, work_dir: str, nprocs: int, *extra) -> list:
    train = [osp.join(ROOT, 'tools', 'train.py'), config]
    train += ['--work-dir', work_dir, *extra, *CONTROL]
    if nprocs == 1:
        return [sys.executable, *train]
    return [
        sys.executable, '-m', 'torch.distributed.run',
        f'--nproc_per_node={nprocs}', f'--master_port={_free_port()}',
        *train, '--launcher', 'pytorch',
    ]  # fmt: skip


def run_to_end(cmd: list, log: str) -> None:
    with open(log, 'a') as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f'{" ".join(cmd)} failed; see {log}')


def run_and_kill(cmd: list, log: str, work_dir: str, after: int, delay):
    """Start ``cmd`` in its own process group; SIGKILL the group ``delay``
    seconds after ``iter_{after}.pth`` appeared."""
    target = osp.join(work_dir, f'iter_{after}.pth')
    with open(log, 'a') as f:
        proc = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        while not osp.exists(target):
            if proc.poll() is not None:
                raise RuntimeError(f'the run ended before {target}; see {log}')
            time.sleep(0.01)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def final_weights(work_dir: str) -> Dict[str, torch.Tensor]:
    from xattn_mm.engine import load_checkpoint_file

    return load_checkpoint_file(osp.join(work_dir, f'iter_{ITERS}.pth'))[
        'state_dict'
    ]


def identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def main() -> None:
    args = parse_args()
    if args.without_random_state:
        CONTROL.extend(
            ['--cfg-options', 'default_hooks.random_state.enable=False']
        )
    rng = random.Random(args.seed)
    os.makedirs(args.work_dir, exist_ok=True)
    work_root = osp.abspath(args.work_dir)
    rows: List[dict] = []
    for model in args.models:
        config = write_config(model, work_root)
        for nprocs in args.nprocs:
            setting = osp.join(work_root, f'{model}_{nprocs}proc')
            shutil.rmtree(setting, ignore_errors=True)
            os.makedirs(setting)
            log = osp.join(setting, 'log.txt')
            reference = osp.join(setting, 'uninterrupted')
            run_to_end(train_command(config, reference, nprocs), log)
            expected = final_weights(reference)
            for k in range(args.kills):
                work = osp.join(setting, f'kill{k}')
                after = rng.randint(1, ITERS - 2)
                delay = rng.uniform(0.0, 0.5)
                run_and_kill(
                    train_command(config, work, nprocs), log, work, after,
                    delay,
                )  # fmt: skip
                with open(osp.join(work, 'last_checkpoint')) as f:
                    resumed_from = osp.basename(f.read().strip())
                run_to_end(
                    train_command(config, work, nprocs, '--resume'), log
                )
                same = identical(final_weights(work), expected)
                rows.append(
                    dict(
                        model=model,
                        nprocs=nprocs,
                        killed_after_checkpoint=after,
                        delay_s=round(delay, 3),
                        resumed_from=resumed_from,
                        bit_identical=same,
                    )
                )
                print(json.dumps(rows[-1]), flush=True)
    print('\n| model | processes | kills | bit-identical final weights |')
    print('| --- | --- | --- | --- |')
    for model in args.models:
        for nprocs in args.nprocs:
            mine = [
                r
                for r in rows
                if r['model'] == model and r['nprocs'] == nprocs
            ]
            same = sum(r['bit_identical'] for r in mine)
            print(
                f'| {model} | {nprocs} | {len(mine)} | {same} of {len(mine)} |'
            )
    with open(osp.join(work_root, 'resume_check.json'), 'w') as f:
        json.dump(rows, f, indent=2)
    if not all(r['bit_identical'] for r in rows):
        sys.exit(1)


if __name__ == '__main__':
    main()
