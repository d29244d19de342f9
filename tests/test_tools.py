"""tools/: train.py, test.py and the distributed launchers, end to end on the
three hosts' stock models with data the tests generate."""

import importlib.util
import json
import math
import os
import pickle
import shutil
import socket
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from xattn_mm.testing import (
    make_classification_folder,
    make_coco_detection,
    make_segmentation_folder,
)

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / 'tools'
CONFIGS = ROOT / 'tests' / 'data' / 'configs'
DET_CFG = str(CONFIGS / 'det_retinanet_tiny.py')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run(args, cwd, timeout=600) -> subprocess.CompletedProcess:
    """Run a tool with this interpreter; return the finished process."""
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        PORT=str(free_port()),
        PATH=f'{Path(sys.executable).parent}:{os.environ["PATH"]}',
    )
    if str(args[0]).endswith('.py'):
        args = [sys.executable, *args]
    else:
        args = ['bash', *args]
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def check(proc: subprocess.CompletedProcess) -> str:
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    return output


def train_losses(work_dir: Path) -> dict:
    """Iteration -> loss from every run's scalars.json under work_dir."""
    losses = {}
    for scalars in sorted(work_dir.glob('*/vis_data/scalars.json')):
        for line in scalars.read_text().splitlines():
            record = json.loads(line)
            if 'loss' in record:
                losses[record['iter']] = record['loss']
    return losses


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(
        f'tool_{name}', TOOLS / f'{name}.py'
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def det_run(tmp_path_factory):
    """A tiny COCO-format set and one single-process training run on it."""
    root = tmp_path_factory.mktemp('det')
    make_coco_detection(root / 'data' / 'tiny_coco', split='train', seed=0)
    make_coco_detection(root / 'data' / 'tiny_coco', split='val', seed=1)
    work_dir = root / 'work'
    output = check(
        run([TOOLS / 'train.py', DET_CFG, '--work-dir', work_dir], cwd=root)
    )
    return Namespace(root=root, work_dir=work_dir, train_output=output)


@pytest.mark.slow
def test_det_train_then_test_single_process(det_run):
    assert (det_run.work_dir / 'epoch_1.pth').is_file()
    assert len(train_losses(det_run.work_dir)) == 2  # 4 images, batch 2
    assert 'coco/bbox_mAP_50' in det_run.train_output
    out = det_run.root / 'results.pkl'
    output = check(
        run(
            [
                TOOLS / 'test.py',
                DET_CFG,
                det_run.work_dir / 'epoch_1.pth',
                '--work-dir',
                det_run.work_dir,
                '--out',
                out,
                '--show-dir',
                'vis',
            ],
            cwd=det_run.root,
        )
    )
    assert 'coco/bbox_mAP' in output
    with open(out, 'rb') as f:
        results = pickle.load(f)
    assert len(results) == 4
    assert {'pred_instances', 'img_id'} <= set(results[0])
    assert len(list(det_run.work_dir.glob('*/vis/*.png'))) == 4


@pytest.mark.slow
def test_det_dist_train_and_test_on_cpu_five_times(det_run):
    for attempt in range(5):
        work_dir = det_run.root / f'dist_{attempt}'
        output = check(
            run(
                [TOOLS / 'dist_train.sh', DET_CFG, 2, '--work-dir', work_dir],
                cwd=det_run.root,
            )
        )
        assert 'using the gloo backend' in output
        output += check(
            run(
                [
                    TOOLS / 'dist_test.sh',
                    DET_CFG,
                    work_dir / 'epoch_1.pth',
                    2,
                    '--work-dir',
                    work_dir,
                ],
                cwd=det_run.root,
            )
        )
        assert 'coco/bbox_mAP' in output
        assert 'terminate called' not in output, f'attempt {attempt}'


@pytest.mark.slow
def test_resume_auto_continues_the_loss_trajectory(det_run):
    reference = det_run.root / 'uninterrupted'
    check(
        run(
            [
                TOOLS / 'train.py',
                DET_CFG,
                '--work-dir',
                reference,
                '--cfg-options',
                'train_cfg.max_epochs=2',
            ],
            cwd=det_run.root,
        )
    )
    interrupted = det_run.root / 'interrupted'
    check(
        run(
            [TOOLS / 'train.py', DET_CFG, '--work-dir', interrupted],
            cwd=det_run.root,
        )
    )
    output = check(
        run(
            [
                TOOLS / 'train.py',
                DET_CFG,
                '--work-dir',
                interrupted,
                '--resume',
                '--cfg-options',
                'train_cfg.max_epochs=2',
            ],
            cwd=det_run.root,
        )
    )
    assert 'resumed epoch: 1, iter: 2' in output
    expected, actual = train_losses(reference), train_losses(interrupted)
    assert sorted(expected) == sorted(actual) == [1, 2, 3, 4]
    for it in (3, 4):
        assert actual[it] == pytest.approx(expected[it], rel=1e-5), it


@pytest.mark.slow
def test_checkpoint_policy_and_coverage_in_the_tools(det_run):
    from xattn_mm.testing.checkpoints import save_payload_checkpoint

    elsewhere = det_run.root / 'downloads'
    elsewhere.mkdir()
    own = det_run.work_dir / 'epoch_1.pth'
    full = torch.load(own, weights_only=False)
    shutil.copy(own, elsewhere / 'full.pth')
    marker = det_run.root / 'payload_ran'
    payload = save_payload_checkpoint(
        elsewhere / 'payload.pth', marker, state_dict=full['state_dict']
    )
    torch.save(
        {'state_dict': {'other.weight': torch.zeros(3)}},
        elsewhere / 'other.pth',
    )

    def train(checkpoint, *extra):
        return run(
            [
                TOOLS / 'train.py',
                DET_CFG,
                '--work-dir',
                det_run.root / 'finetune',
                '--cfg-options',
                f'load_from={checkpoint}',
                *extra,
            ],
            cwd=det_run.root,
        )

    # The run's own checkpoint, copied anywhere, loads with no flag.
    assert 'Load checkpoint from' in check(train(elsewhere / 'full.pth'))
    refused = train(payload)
    assert refused.returncode != 0
    assert f'Refused to load checkpoint {payload}' in refused.stderr
    assert '--trust-checkpoint' in refused.stderr
    test = [TOOLS / 'test.py', DET_CFG]
    refused = run([*test, payload], cwd=det_run.root)
    assert 'Refused to load checkpoint' in refused.stderr
    assert not marker.exists()
    check(train(payload, '--trust-checkpoint'))
    # A checkpoint of another model: refused, not evaluated at random.
    mismatch = run([*test, elsewhere / 'other.pth'], cwd=det_run.root)
    assert mismatch.returncode != 0
    assert "100.0% of the model's parameters unloaded" in mismatch.stderr
    assert 'backbone.conv1.weight' in mismatch.stderr


@pytest.mark.slow
def test_mmpretrain_config_trains(tmp_path):
    make_classification_folder(tmp_path / 'data' / 'tiny_cls')
    output = check(
        run(
            [
                TOOLS / 'train.py',
                CONFIGS / 'cls_resnet_tiny.py',
                '--work-dir',
                tmp_path / 'work',
            ],
            cwd=tmp_path,
        )
    )
    assert 'accuracy/top1' in output
    assert (tmp_path / 'work' / 'epoch_1.pth').is_file()


@pytest.mark.slow
def test_mmseg_config_trains(tmp_path):
    make_segmentation_folder(tmp_path / 'data' / 'tiny_seg')
    output = check(
        run(
            [
                TOOLS / 'train.py',
                CONFIGS / 'seg_fcn_tiny.py',
                '--work-dir',
                tmp_path / 'work',
            ],
            cwd=tmp_path,
        )
    )
    assert 'mIoU' in output
    assert (tmp_path / 'work' / 'iter_2.pth').is_file()


@pytest.mark.slow
def test_mim_train_runs_the_packaged_tools(det_run, tmp_path):
    # mim runs <installed package>/.mim/tools/train.py, which a regular
    # (non-editable) install ships: build one from a copy of the tree (the
    # build rewrites xattn_mm/.mim in the source it builds from).
    files = subprocess.run(
        ['git', 'ls-files', '-co', '--exclude-standard'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    src = tmp_path / 'src'
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    site = tmp_path / 'site'
    check(
        subprocess.run(
            [
                sys.executable,
                '-m',
                'pip',
                'install',
                '--no-deps',
                '--no-build-isolation',
                '--target',
                str(site),
                str(src),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
    )
    assert (site / 'xattn_mm' / '.mim' / 'tools' / 'train.py').is_file()
    assert (site / 'xattn_mm' / '.mim' / 'model-index.yml').is_file()
    mim = Path(sys.executable).parent / 'mim'
    work_dir = tmp_path / 'work'
    env = dict(
        os.environ,
        PYTHONPATH=str(site),
        PATH=f'{Path(sys.executable).parent}:{os.environ["PATH"]}',
    )
    output = check(
        subprocess.run(
            [
                str(mim),
                'train',
                'xattn_mm',
                DET_CFG,
                '--work-dir',
                str(work_dir),
            ],
            cwd=det_run.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    )
    assert str(site / 'xattn_mm' / '.mim' / 'tools' / 'train.py') in output
    assert (work_dir / 'epoch_1.pth').is_file()


def parse_tool_args(name, *argv):
    """Load tools/<name>.py and parse ``argv`` with its own parser."""
    tool = load_tool(name)
    sys_argv = sys.argv
    sys.argv = [f'{name}.py', *map(str, argv)]
    try:
        return tool, tool.parse_args()
    finally:
        sys.argv = sys_argv


def test_train_options_edit_the_config(tmp_path, monkeypatch):
    from xattn_mm.engine import checkpoint

    monkeypatch.setattr(checkpoint, '_trusted', set())
    argv = ('--amp', '--auto-scale-lr', '--resume', '--work-dir', tmp_path)
    tool, args = parse_tool_args('train', DET_CFG, *argv)
    cfg = tool.setup_cfg(args)
    # No CUDA here: bf16 autocast without a loss scaler.
    assert cfg.optim_wrapper.type == 'AutocastOptimWrapper'
    assert cfg.optim_wrapper.dtype == 'bfloat16'
    assert cfg.auto_scale_lr.enable
    # --resume in a work_dir without checkpoints: a fresh start.
    assert not cfg.resume and cfg.load_from is None
    # Without last_checkpoint: the highest epoch_N.pth, never a fresh start.
    for n in (2, 10):
        (tmp_path / f'epoch_{n}.pth').touch()
    cfg = tool.setup_cfg(args)
    assert cfg.resume and cfg.load_from == str(tmp_path / 'epoch_10.pth')
    assert not checkpoint.is_trusted_checkpoint(cfg.load_from)

    tool, args = parse_tool_args(
        'train', DET_CFG, '--resume', '/x/epoch_3.pth', '--trust-checkpoint'
    )
    cfg = tool.setup_cfg(args)
    assert cfg.load_from == '/x/epoch_3.pth'
    assert cfg.work_dir == './work_dirs/det_retinanet_tiny'
    assert checkpoint.is_trusted_checkpoint('/x/epoch_3.pth')


def test_resume_auto_refuses_what_it_cannot_order(tmp_path):
    from xattn_mm.engine.tool_utils import find_resume_checkpoint

    (tmp_path / 'best_coco_bbox_mAP.pth').touch()
    with pytest.raises(ValueError, match='which is the latest'):
        find_resume_checkpoint(str(tmp_path))
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'gone.pth'))
    with pytest.raises(FileNotFoundError, match='gone.pth'):
        find_resume_checkpoint(str(tmp_path))


def test_test_out_refuses_to_overwrite(tmp_path):
    out = tmp_path / 'results.pkl'
    out.write_bytes(b'kept')
    tool, args = parse_tool_args('test', DET_CFG, 'x.pth', '--out', out)
    with pytest.raises(FileExistsError, match='--overwrite'):
        tool.setup_cfg(args)
    assert out.read_bytes() == b'kept'
    tool, args = parse_tool_args(
        'test', DET_CFG, 'x.pth', '--out', out, '--overwrite'
    )
    assert tool.setup_cfg(args).test_evaluator[-1].out_file_path == str(out)


@pytest.mark.parametrize(
    'dtype, wrapper',
    [(None, 'AmpOptimWrapper'), ('bfloat16', 'AutocastOptimWrapper')],
)
def test_amp_on_cuda_keeps_loss_scaling_for_fp16(dtype, wrapper, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    argv = ['--amp'] + ([] if dtype is None else ['--amp-dtype', dtype])
    tool, args = parse_tool_args('train', DET_CFG, *argv)
    optim_wrapper = tool.setup_cfg(args).optim_wrapper
    assert optim_wrapper.type == wrapper
    assert optim_wrapper.get('loss_scale') == (
        'dynamic' if dtype is None else None
    )


def test_amp_trains_the_synthetic_config_on_cpu(tmp_path):
    # The CI's end-to-end AMP path: bf16 autocast, no loss scaler.
    from xattn_mm.det.datasets.synthetic_oneshot import (
        generate_synthetic_oneshot,
    )

    generate_synthetic_oneshot(
        str(tmp_path / 'data' / 'synthetic_oneshot'), num_train=16, num_val=4
    )
    workers = [
        f'{loader}.{key}'
        for loader in ('train_dataloader', 'val_dataloader')
        for key in ('num_workers=0', 'persistent_workers=False')
    ]
    work_dir = tmp_path / 'work'
    output = check(
        run(
            [
                TOOLS / 'train.py',
                ROOT / 'configs' / 'ia_detr' / 'synthetic_oneshot.py',
                '--amp',
                '--work-dir',
                work_dir,
                '--cfg-options',
                'train_cfg.max_epochs=1',
                'default_hooks.logger.interval=1',
                *workers,
            ],
            cwd=tmp_path,
        )
    )
    assert "type='AutocastOptimWrapper'" in output
    losses = train_losses(work_dir)
    assert len(losses) == 2  # 16 images, batch 8
    assert all(math.isfinite(v) for v in losses.values()), losses


def test_train_option_errors():
    tool, args = parse_tool_args('train', DET_CFG, '--trust-checkpoint')
    with pytest.raises(ValueError, match='names no checkpoint'):
        tool.setup_cfg(args)
    tool, args = parse_tool_args('train', DET_CFG, '--amp-dtype', 'bfloat16')
    with pytest.raises(ValueError, match='needs --amp'):
        tool.setup_cfg(args)
    tool, args = parse_tool_args(
        'train', DET_CFG, '--amp', '--amp-dtype', 'float16'
    )
    with pytest.raises(ValueError, match='needs CUDA'):
        tool.setup_cfg(args)
    tool, args = parse_tool_args(
        'train',
        DET_CFG,
        '--auto-scale-lr',
        '--cfg-options',
        'auto_scale_lr=None',
    )
    with pytest.raises(ValueError, match='base_batch_size'):
        tool.setup_cfg(args)


def test_test_options_edit_the_config(tmp_path):
    tool, args = parse_tool_args(
        'test',
        DET_CFG,
        'c.pth',
        '--out',
        tmp_path / 'r.pkl',
        '--show-dir',
        'vis',
    )
    cfg = tool.setup_cfg(args)
    assert cfg.load_from == 'c.pth'
    assert cfg.test_evaluator[-1].type == 'mmengine.DumpResults'
    assert cfg.default_hooks.visualization.test_out_dir == 'vis'
    args.out = 'r.json'
    with pytest.raises(ValueError, match='--out must end with'):
        tool.setup_cfg(args)
    args.out, args.tta = None, True
    with pytest.raises(ValueError, match='tta_model and tta_pipeline'):
        tool.setup_cfg(args)


@pytest.mark.parametrize(
    'config, check_cfg',
    [
        (
            'cls_resnet_tiny.py',
            lambda cfg: cfg.default_hooks.visualization.enable,
        ),
        ('seg_fcn_tiny.py', lambda cfg: cfg.visualizer.save_dir == 'vis'),
    ],
)
def test_show_dir_for_each_host(config, check_cfg):
    tool, args = parse_tool_args(
        'test', CONFIGS / config, 'c.pth', '--show-dir', 'vis'
    )
    assert check_cfg(tool.setup_cfg(args))


@pytest.mark.slow
def test_gpu_check_dry_run_needs_no_mmcv_ops(tmp_path):
    out = tmp_path / 'gpu_check.json'
    output = check(
        run(
            [
                TOOLS / 'analysis_tools' / 'gpu_check.py',
                '--dry-run',
                '--without-mmcv-ops',
                '--out',
                out,
            ],
            cwd=ROOT,
        )
    )
    assert '| section | item | result |' in output
    report = json.loads(out.read_text())
    assert report['failed'] == [], report['failed']
    assert report['environment']['mmcv_ext'] == 'missing (stand-in)'
    names = set(report['fp64'])
    assert len(names) == 8 and 'ia_detr[IADETRDecoder]' in names
    for name, errors in report['fp64'].items():  # CPU fp32 against fp64
        assert errors['finite'] and errors['missing_grads'] == 0, name
        assert errors['output'] < 1e-4 and errors['grad'] < 1e-4, name
    assert len(report['amp']) == 2 * len(names)
    for name, errors in report['amp'].items():
        assert errors['finite'] and errors['output'] < 0.2, name
    assert report['kernels']['ia_detr[IADETRDecoder] bf16']
    step = report['ia_detr_step']
    assert 60 < step['voc_model_parameters_m'] < 65  # the VOC config builds
    for label in ('fp32', 'fp16', 'bf16'):
        assert step[label]['losses_finite'] and step[label]['step_ms'] > 0
    assert set(report['benchmarks']) == {
        'indirect_attention',
        'ia_decoder',
        'stoch_ca',
        'dacsm',
        'tmt',
    }
    for name, result in report['benchmarks'].items():
        assert result['returncode'] == 0 and result['output'], name


def test_gpu_check_focal_loss_stand_in_is_mmdets():
    from mmdet.models.losses import FocalLoss

    tool = load_tool('analysis_tools/gpu_check')
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(6, 3, generator=g)
    target = torch.tensor([0, 2, 3, 1, 3, 0])  # 3: background
    weight = torch.rand(6, generator=g)
    expected = FocalLoss(loss_weight=1.0)(pred, target, weight, avg_factor=4)
    got = tool._focal_loss_without_mmcv(pred, target, weight, avg_factor=4)
    torch.testing.assert_close(got, expected)


def test_gpu_check_inputs_are_on_the_requested_device():
    """Every component's inputs, the labels inside data samples included,
    are built on the device asked for: the CUDA run calls ``model.loss``
    directly, past the data preprocessor that would move them. The meta
    device stands in for CUDA."""
    from mmengine.structures import BaseDataElement

    import xattn_mm.cls  # noqa: F401
    import xattn_mm.det  # noqa: F401

    tool = load_tool('analysis_tools/gpu_check')

    def tensors(x):
        if isinstance(x, torch.Tensor):
            yield x
        elif hasattr(x, 'tensor'):  # mmdet's boxes
            yield x.tensor
        elif isinstance(x, BaseDataElement):
            yield from tensors(list(x.values()))
        elif isinstance(x, dict):
            yield from tensors(list(x.values()))
        elif isinstance(x, (list, tuple)):
            for item in x:
                yield from tensors(item)

    meta = torch.device('meta')
    for comp in tool.components(dry=True):
        found = list(tensors(comp.inputs(meta, torch.float32)))
        assert found and all(t.device == meta for t in found), comp.name


def test_decoder_ablation_variants_build_and_train_a_step():
    """Each variant of tools/analysis_tools/decoder_ablation.py is the demo
    config with its decoder (and encoder) switched: it builds, shrunk, and
    trains a step."""
    from mmdet.registry import MODELS
    from mmengine.config import Config, DictAction
    from mmengine.registry import init_default_scope

    import xattn_mm.det  # noqa: F401
    from xattn_mm.testing.configs import shrink
    from xattn_mm.testing.one_shot import one_shot_batch

    tool = load_tool('analysis_tools/decoder_ablation')
    init_default_scope('mmdet')
    assert len(tool.VARIANTS) == 6
    for variant in tool.VARIANTS:
        cfg = Config.fromfile(tool.CONFIG)
        action = DictAction(option_strings=[], dest='cfg_options')
        parsed = Namespace()
        action(None, parsed, tool.overrides(variant, seed=0))
        cfg.merge_from_dict(parsed.cfg_options)
        name = variant.replace('-no-encoder', '')
        assert cfg.model.decoder.type == tool.DECODERS[name]
        assert (cfg.model.encoder is None) == variant.endswith('-no-encoder')
        model = MODELS.build(shrink(cfg.model))
        model.init_weights()
        data = model.data_preprocessor(one_shot_batch(num_boxes=(2, 1)), True)
        losses = model(**data, mode='loss')
        assert all(torch.isfinite(v) for v in losses.values()), variant
