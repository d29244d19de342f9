"""Evaluate a checkpoint with a config, whichever host (mmdet, mmpretrain,
mmseg) its ``default_scope`` names.

    python tools/test.py CONFIG CHECKPOINT [--out results.pkl] ...
    tools/dist_test.sh CONFIG CHECKPOINT NGPUS [...]
"""

import argparse
import os.path as osp

from mmengine.config import Config, ConfigDict

from xattn_mm.engine import trust_checkpoint
from xattn_mm.engine.tool_utils import (
    CheckpointCoverageHook,
    add_common_args,
    add_trust_arg,
    build_runner,
    load_config,
    run,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir', help='directory for the evaluation metric logs'
    )
    parser.add_argument(
        '--out', help='dump the predictions to this .pkl/.pickle file'
    )
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='let --out replace an existing file (refused without it)',
    )
    parser.add_argument(
        '--max-unloaded',
        type=float,
        default=0.01,
        help="largest share of the model's parameters (by element count) "
        'the checkpoint may leave without weights (default: 0.01)',
    )
    parser.add_argument(
        '--show-dir', help='save drawn predictions under this directory'
    )
    add_trust_arg(parser, 'CHECKPOINT')
    parser.add_argument(
        '--tta', action='store_true', help='test-time augmentation'
    )
    add_common_args(parser)
    return parser.parse_args()


def enable_visualization(cfg: Config, show_dir: str) -> None:
    """Make the host's visualization hook draw the test predictions into
    ``show_dir``.

    Args:
        cfg (Config): The config; must define
            ``default_hooks.visualization``.
        show_dir (str): Output directory.
    """
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise ValueError(
            '--show-dir needs default_hooks.visualization in the config.'
        )
    hook_type = hook['type'].split('.')[-1]
    if hook_type == 'DetVisualizationHook':
        hook.update(draw=True, test_out_dir=show_dir)
    elif hook_type == 'SegVisualizationHook':
        hook.draw = True
        cfg.visualizer.save_dir = show_dir
    elif hook_type == 'VisualizationHook':
        hook.update(enable=True, out_dir=show_dir)
    else:
        raise ValueError(
            f'--show-dir does not know the hook {hook_type}; '
            'expected DetVisualizationHook, '
            'SegVisualizationHook or VisualizationHook.'
        )


def enable_tta(cfg: Config) -> None:
    """Wrap the model in ``cfg.tta_model`` and test with
    ``cfg.tta_pipeline``.

    Args:
        cfg (Config): The config; must define ``tta_model`` and
            ``tta_pipeline``.
    """
    missing = [key for key in ('tta_model', 'tta_pipeline') if key not in cfg]
    if missing:
        raise ValueError(f'--tta needs {" and ".join(missing)} in the config.')
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:
        dataset = dataset.dataset
    dataset.pipeline = cfg.tta_pipeline


def setup_cfg(args: argparse.Namespace) -> Config:
    """Merge the command-line options into the config.

    Args:
        args (argparse.Namespace): Parsed arguments of this script.

    Returns:
        Config: The config to build the runner from.
    """
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    if args.trust_checkpoint:
        trust_checkpoint(args.checkpoint)
    if args.show_dir:
        enable_visualization(cfg, args.show_dir)
    if args.tta:
        enable_tta(cfg)
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(
                f'--out must end with .pkl or .pickle, got {args.out!r}.'
            )
        if osp.exists(args.out) and not args.overwrite:
            raise FileExistsError(
                f'--out {args.out} exists; pass --overwrite to replace it.'
            )
        evaluator = cfg.test_evaluator
        if isinstance(evaluator, (dict, ConfigDict)):
            evaluator = [evaluator]
        cfg.test_evaluator = list(evaluator) + [
            dict(type='mmengine.DumpResults', out_file_path=args.out)
        ]
    return cfg


def main() -> None:
    args = parse_args()
    runner = build_runner(setup_cfg(args))
    runner.register_hook(CheckpointCoverageHook(args.max_unloaded))
    run(runner, 'test')


if __name__ == '__main__':
    main()
