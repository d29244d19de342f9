"""What the tools share: host-agnostic config loading and runner building
for tools/train.py and tools/test.py (the config's ``default_scope`` picks
the host), and checkpoint export for the model converters.
"""

import argparse
import os
import os.path as osp
import pickle
from typing import Callable, Optional

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--cfg-options``, ``--launcher`` and ``--local-rank``.

    Args:
        parser (argparse.ArgumentParser): The tool's parser.
    """
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


def load_config(args: argparse.Namespace) -> Config:
    """Read ``args.config`` and apply ``--cfg-options``, ``--launcher`` and
    ``--work-dir`` (default ``./work_dirs/<config name>``).

    Args:
        args (argparse.Namespace): Needs ``config``, ``cfg_options``,
            ``launcher`` and ``work_dir``.

    Returns:
        Config: The merged config.
    """
    os.environ.setdefault('LOCAL_RANK', str(getattr(args, 'local_rank', 0)))
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    work_dir: Optional[str] = args.work_dir
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join(
            './work_dirs', osp.splitext(osp.basename(args.config))[0]
        )
    return cfg


def build_runner(cfg: Config) -> Runner:
    """Build the runner the config asks for (``runner_type``, else the
    default :class:`~mmengine.runner.Runner`).

    Args:
        cfg (Config): The full config.

    Returns:
        Runner: The runner.
    """
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def add_trust_arg(parser: argparse.ArgumentParser) -> None:
    """Add ``--trust-checkpoint`` to a converter that reads training
    checkpoints."""
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='unpickle the whole file (mmengine training checkpoints store '
        'the message hub beside the weights); only for files you trust',
    )


def export_checkpoint(
    src: str, dst: str, trust: bool, convert: Callable[[dict], dict]
) -> None:
    """Read a checkpoint, convert its state dict and save the weights only.

    Args:
        src (str): Training checkpoint.
        dst (str): Output file: ``meta`` (with ``exported_from``) and the
            converted ``state_dict``, no training state.
        trust (bool): Unpickle the whole file instead of weights only.
        convert (Callable[[dict], dict]): State dict converter.

    Raises:
        SystemExit: If ``src`` holds objects beyond weights and ``trust`` is
            not given.
    """
    try:
        checkpoint = torch.load(
            src, map_location='cpu', weights_only=not trust
        )
    except pickle.UnpicklingError as e:
        raise SystemExit(
            f'{src} holds more than weights ({e}). If you trust it, '
            'rerun with --trust-checkpoint.'
        ) from None
    state = checkpoint.get('state_dict', checkpoint)
    meta = dict(checkpoint.get('meta') or {}, exported_from=src)
    torch.save({'meta': meta, 'state_dict': convert(state)}, dst)
