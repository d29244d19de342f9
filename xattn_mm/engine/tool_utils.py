"""What the tools share: host-agnostic config loading and runner building
for tools/train.py and tools/test.py (the config's ``default_scope`` picks
the host), the runtime fixes they install, and checkpoint export for the
model converters.
"""

import argparse
import os
import os.path as osp
import re
from typing import Any, Optional

from mmengine.config import Config, DictAction
from mmengine.hooks import Hook
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .checkpoint import (
    install_checkpoint_policy,
)
from .dist import prepare_cpu_dist, shutdown_dist


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


def install_tool_runtime(cfg: Config) -> None:
    """What every tool run needs beyond the config: the checkpoint policy
    in mmengine's loaders (:func:`~xattn_mm.engine.install_checkpoint_policy`)
    and, on a machine without CUDA, the gloo process group and CPU DDP
    wrapper (:func:`~xattn_mm.engine.prepare_cpu_dist`). Users who build
    their own Runner make the same two calls.

    Args:
        cfg (Config): The full config (``model_wrapper_cfg`` may be set).
    """
    install_checkpoint_policy()
    prepare_cpu_dist(cfg)


def build_runner(cfg: Config) -> Runner:
    """Build the runner the config asks for (``runner_type``, else the
    default :class:`~mmengine.runner.Runner`), after
    :func:`install_tool_runtime`.

    Args:
        cfg (Config): The full config.

    Returns:
        Runner: The runner.
    """
    install_tool_runtime(cfg)
    try:
        if 'runner_type' in cfg:
            return RUNNERS.build(cfg)
        return Runner.from_cfg(cfg)
    except KeyError as e:
        hint = _custom_imports_hint(cfg, str(e))
        if hint is None:
            raise
        raise KeyError(f'{e.args[0] if e.args else e} {hint}') from e


_SUBPACKAGES = dict(mmdet='xattn_mm.det', mmpretrain='xattn_mm.cls')
_SUBPACKAGES.update(mmseg='xattn_mm.seg')


def _custom_imports_hint(cfg: Config, message: str) -> Optional[str]:
    """For "X is not in the ... registry" of a config that does not
    import xattn_mm: what to add."""
    if 'is not in the' not in message:
        return None
    imports = (cfg.get('custom_imports') or {}).get('imports', [])
    imports = [imports] if isinstance(imports, str) else list(imports)
    if any(str(i).startswith('xattn_mm') for i in imports):
        return None
    package = _SUBPACKAGES.get(cfg.get('default_scope'), 'xattn_mm.det')
    return (
        f'(the config imports no xattn_mm subpackage, whose modules register '
        f"on import: add custom_imports = dict(imports=['{package}'], "
        'allow_failed_imports=False) to it)'
    )


def run(runner: Runner, mode: str) -> Any:
    """``runner.train()`` or ``runner.test()``, then end the process group
    cleanly (:func:`~xattn_mm.engine.shutdown_dist`).

    Args:
        runner (Runner): The runner.
        mode (str): 'train', 'val' or 'test'.

    Returns:
        The runner method's result.
    """
    success = False
    try:
        result = getattr(runner, mode)()
        success = True
        return result
    finally:
        shutdown_dist(success)


def add_trust_arg(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--trust-checkpoint``.

    Args:
        parser (argparse.ArgumentParser): The tool's parser.
        what (str): Which checkpoint it trusts, for the help text.
    """
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help=f'unpickle {what} in full, beyond the allow-list of '
        'OpenMMLab checkpoint types; it can run arbitrary code, so only for '
        'files you trust',
    )


_RUN_CHECKPOINT = re.compile(r'^(epoch|iter)_(\d+)\.pth$')


def find_resume_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume auto`` continues from.

    ``last_checkpoint`` when the work_dir has one (it must name an existing
    file); otherwise the highest ``epoch_N.pth`` / ``iter_N.pth`` there;
    None for a work_dir without checkpoints (training starts afresh).

    Args:
        work_dir (str): The run's work_dir.

    Returns:
        str or None: The checkpoint path.

    Raises:
        FileNotFoundError: ``last_checkpoint`` names a missing file.
        ValueError: The work_dir holds checkpoints but which one is the
            latest cannot be told (other names, or both epoch_ and iter_
            files): starting afresh would overwrite them.
    """
    last = osp.join(work_dir, 'last_checkpoint')
    found = (
        sorted(f for f in os.listdir(work_dir) if f.endswith('.pth'))
        if osp.isdir(work_dir)
        else []
    )
    if osp.isfile(last):
        with open(last) as f:
            path = f.read().strip()
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'--resume auto: {last} names {path!r}, which does not exist '
                f'(checkpoints in the work_dir: {found or "none"}). Pass '
                '--resume PATH.'
            )
        return path
    runs = [m for m in map(_RUN_CHECKPOINT.match, found) if m]
    kinds = {m.group(1) for m in runs}
    if runs and len(kinds) == 1:
        latest = max(runs, key=lambda m: int(m.group(2)))
        return osp.join(work_dir, latest.group(0))
    if found:
        raise ValueError(
            f'--resume auto: {work_dir} has no last_checkpoint and its '
            f'checkpoints {found} do not say which is the latest; pass '
            '--resume PATH (training afresh would overwrite them).'
        )
    return None


class CheckpointCoverageHook(Hook):
    """Refuse a checkpoint that leaves more than ``max_unloaded`` of the
    model's parameters (by element count) without weights: evaluating
    random weights is never what ``tools/test.py`` was asked for.

    Args:
        max_unloaded (float): Largest share in [0, 1] of parameter elements
            the checkpoint may lack.
    """

    priority = 'VERY_HIGH'

    def __init__(self, max_unloaded: float) -> None:
        if not 0 <= max_unloaded <= 1:
            raise ValueError(
                f'max_unloaded must be in [0, 1], got {max_unloaded}.'
            )
        self.max_unloaded = max_unloaded

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('state_dict', checkpoint)
        keys = {re.sub(r'^module\.', '', k) for k in state}
        model = getattr(runner.model, 'module', runner.model)
        params = dict(model.named_parameters())
        missing = [k for k in params if k not in keys]
        total = sum(p.numel() for p in params.values())
        share = sum(params[k].numel() for k in missing) / max(total, 1)
        if share > self.max_unloaded:
            raise ValueError(
                f'Checkpoint {runner._load_from} leaves {share:.1%} of the '
                f"model's parameters unloaded ({len(missing)} tensors, "
                f'first: {missing[:5]}); the limit is '
                f'{self.max_unloaded:.1%} (--max-unloaded). Is it a '
                "checkpoint of this config's model?"
            )
