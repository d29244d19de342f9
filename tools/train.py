"""Train a model from a config, whichever host (mmdet, mmpretrain, mmseg) its
``default_scope`` names.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [auto|PATH]] ...
    tools/dist_train.sh CONFIG NGPUS [...]   # NGPUS CPU processes without CUDA
"""

import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from xattn_mm.engine import trust_checkpoint


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='directory for logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from PATH, or with no value (or "auto") from the latest '
        'checkpoint in the work_dir',
    )
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='allow a full (unsafe) unpickling of the checkpoint named by '
        "load_from or --resume PATH; the run's own work_dir is trusted for "
        'resuming without it',
    )
    parser.add_argument(
        '--amp', action='store_true', help='automatic mixed precision'
    )
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the real batch size against '
        'auto_scale_lr.base_batch_size',
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config keys, e.g. train_cfg.max_iters=10',
    )
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher',
    )
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def setup_cfg(args: argparse.Namespace) -> Config:
    """Merge the command-line options into the config.

    Args:
        args (argparse.Namespace): Parsed arguments of this script.

    Returns:
        Config: The config to build the runner from.
    """
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join(
            './work_dirs', osp.splitext(osp.basename(args.config))[0]
        )

    if args.amp:
        wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper_type == 'AmpOptimWrapper':
            print('AMP is already enabled in the config.')
        elif wrapper_type != 'OptimWrapper':
            raise ValueError(
                '--amp needs optim_wrapper.type = "OptimWrapper", got '
                f'{wrapper_type!r}.'
            )
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.auto_scale_lr:
        if 'base_batch_size' not in (cfg.get('auto_scale_lr') or {}):
            raise ValueError(
                '--auto-scale-lr needs auto_scale_lr.base_batch_size in the '
                f'config {args.config}.'
            )
        cfg.auto_scale_lr.enable = True

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if cfg.get('resume', False):
        trust_checkpoint(cfg.work_dir)
    if args.trust_checkpoint:
        if cfg.get('load_from') is None:
            raise ValueError(
                '--trust-checkpoint names no checkpoint: set '
                'load_from or pass --resume PATH.'
            )
        trust_checkpoint(cfg.load_from)
    return cfg


def main() -> None:
    cfg = setup_cfg(parse_args())
    if 'runner_type' in cfg:
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    main()
