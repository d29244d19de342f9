"""Train a model from a config, whichever host (mmdet, mmpretrain, mmseg) its
``default_scope`` names.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [auto|PATH]] ...
    tools/dist_train.sh CONFIG NGPUS [...]   # NGPUS CPU processes without CUDA
"""

import argparse
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.logging import print_log

from xattn_mm.engine import trust_checkpoint
from xattn_mm.engine.tool_utils import (
    add_common_args,
    add_trust_arg,
    build_runner,
    find_resume_checkpoint,
    load_config,
    run,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='directory for logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from PATH, or with no value (or "auto") from the '
        "work_dir's last_checkpoint, else its highest epoch_N/iter_N.pth "
        '(refused when it holds checkpoints of other names)',
    )
    add_trust_arg(parser, 'the checkpoint named by load_from or --resume')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='automatic mixed precision: fp16 with dynamic loss scaling on '
        'CUDA, bf16 autocast (no loss scaler) on the CPU',
    )
    parser.add_argument(
        '--amp-dtype',
        choices=['float16', 'bfloat16'],
        help='the --amp dtype; bfloat16 runs without a loss scaler. '
        'Defaults to float16 on CUDA and bfloat16 on the CPU (which has no '
        'loss scaler for float16)',
    )
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the real batch size against '
        'auto_scale_lr.base_batch_size',
    )
    add_common_args(parser)
    return parser.parse_args()


def setup_cfg(args: argparse.Namespace) -> Config:
    """Merge the command-line options into the config.

    Args:
        args (argparse.Namespace): Parsed arguments of this script.

    Returns:
        Config: The config to build the runner from.
    """
    cfg = load_config(args)

    if args.amp_dtype is not None and not args.amp:
        raise ValueError('--amp-dtype needs --amp.')
    if args.amp:
        enable_amp(cfg, args.amp_dtype)

    if args.auto_scale_lr:
        if 'base_batch_size' not in (cfg.get('auto_scale_lr') or {}):
            raise ValueError(
                '--auto-scale-lr needs auto_scale_lr.base_batch_size in the '
                f'config {args.config}.'
            )
        cfg.auto_scale_lr.enable = True

    if args.resume is not None:
        cfg.resume = True
        if args.resume != 'auto':
            cfg.load_from = args.resume
    if cfg.get('resume', False) and cfg.get('load_from') is None:
        # mmengine would read last_checkpoint only, and without one train
        # afresh over the checkpoints already there.
        found = find_resume_checkpoint(cfg.work_dir)
        if found is None:
            print_log(
                f'--resume auto: no checkpoint in {cfg.work_dir}; training '
                'starts afresh.',
                'current',
            )
            cfg.resume = False
        else:
            print_log(f'--resume auto: resuming from {found}.', 'current')
            cfg.load_from = found
    if args.trust_checkpoint:
        if cfg.get('load_from') is None:
            raise ValueError(
                '--trust-checkpoint names no checkpoint: set '
                'load_from or pass --resume PATH.'
            )
        trust_checkpoint(cfg.load_from)
    return cfg


def enable_amp(cfg: Config, dtype: Optional[str]) -> None:
    """Switch ``cfg.optim_wrapper`` to mixed precision.

    Args:
        cfg (Config): The config; its ``optim_wrapper.type`` must be
            ``OptimWrapper`` (or already a mixed-precision wrapper).
        dtype (str, optional): ``'float16'`` (mmengine's
            ``AmpOptimWrapper``, dynamic loss scaling, CUDA only) or
            ``'bfloat16'`` (``AutocastOptimWrapper``, no loss scaler).
            None: float16 on CUDA, bfloat16 on the CPU.
    """
    wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper_type in ('AmpOptimWrapper', 'AutocastOptimWrapper'):
        print_log(f'AMP is already enabled in the config ({wrapper_type}).')
        return
    if wrapper_type != 'OptimWrapper':
        raise ValueError(
            '--amp needs optim_wrapper.type = "OptimWrapper", got '
            f'{wrapper_type!r}.'
        )
    cuda = torch.cuda.is_available()
    dtype = dtype or ('float16' if cuda else 'bfloat16')
    if dtype == 'float16':
        if not cuda:
            raise ValueError(
                "--amp-dtype float16 needs CUDA (mmengine's loss-scaling "
                'AmpOptimWrapper); on the CPU use bfloat16.'
            )
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    else:
        cfg.optim_wrapper.type = 'AutocastOptimWrapper'
        cfg.optim_wrapper.dtype = 'bfloat16'
    print_log(f'AMP: {cfg.optim_wrapper.type} in {dtype}.', 'current')


def main() -> None:
    run(build_runner(setup_cfg(parse_args())), 'train')


if __name__ == '__main__':
    main()
