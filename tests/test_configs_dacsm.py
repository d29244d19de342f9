"""Stage-1 and stage-2 leaves under configs/dacsm carry the CDTrans protocol
their names promise; the generated files are up to date. (Every leaf builds
shrunk and trains a step, stage 2 on a paired batch, in
tests/test_configs.py.)"""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mmengine.config import Config
from mmengine.registry import init_default_scope

import xattn_mm.cls  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
DACSM = ROOT / 'configs' / 'dacsm'
CONFIGS = sorted(p for p in DACSM.rglob('*.py') if '_base_' not in p.parts)
STAGE1 = [p for p in CONFIGS if '-stage1_' in p.name]
STAGE2 = [p for p in CONFIGS if '-stage2_' in p.name]
# benchmark folder: (domains, number of classes, stage-1 / stage-2 lr)
EXPECTED = {
    'office31': (3, 31, (0.008, 0.008)),
    'office-home': (4, 65, (0.008, 0.008)),
    'visda2017': (2, 12, (5e-4, 5e-5)),
    'domainnet': (6, 345, (0.008, 0.008)),
}


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    init_default_scope('mmpretrain')


def test_generated_configs_are_up_to_date():
    proc = subprocess.run(
        [sys.executable, 'tools/misc/generate_dacsm_configs.py', '--check'],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Pairs: Office-31 6, Office-Home 12, VisDA 1, DomainNet 30; two
    # backbones; stage 1 once per source domain (VisDA: one).
    assert len(STAGE2) == 2 * (6 + 12 + 1 + 30)
    assert len(STAGE1) == 2 * (3 + 4 + 1 + 6)
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    assert 'configs/dacsm/metafile.yml' in index['Import']
    metafile = yaml.safe_load((DACSM / 'metafile.yml').read_text())
    assert {m['Config'] for m in metafile['Models']} == {
        rel(p) for p in CONFIGS
    }
    assert all(m['In Collection'] == 'DACSM' for m in metafile['Models'])


@pytest.mark.parametrize('path', CONFIGS, ids=rel)
def test_protocol_of_every_leaf(path):
    cfg = Config.fromfile(str(path))
    bench = path.parent.name
    domains, classes, lrs = EXPECTED[bench]
    stage2 = path in STAGE2
    assert cfg.custom_imports.imports == ['xattn_mm.cls']
    assert cfg.model.type == 'UDAClassifier'
    assert cfg.model.head.num_classes == classes
    backbone = cfg.model.backbone
    arch = 'deit-base' if '_deit-base-' in path.name else 'deit-small'
    assert backbone.type == 'DAT' and backbone.arch == arch
    assert cfg.model.head.in_channels == (768 if arch == 'deit-base' else 384)
    assert backbone.init_cfg.type == 'Pretrained'
    assert cfg.optim_wrapper.optimizer.type == 'SGD'
    assert cfg.optim_wrapper.optimizer.lr == lrs[stage2]
    assert cfg.optim_wrapper.clip_grad.max_norm == 1.0
    assert cfg.train_dataloader.batch_size == 64
    score = 'mean_class' if bench == 'visda2017' else 'overall'
    assert cfg.default_hooks.checkpoint.save_best == f'accuracy/{score}'
    assert cfg.val_evaluator.type == 'MeanClassAccuracy'
    train = cfg.train_dataloader.dataset
    if not stage2:
        assert cfg.train_cfg.max_epochs == 10
        assert train.type == 'CustomDataset'
        assert not cfg.get('custom_hooks')
        return
    assert cfg.train_cfg.max_epochs == 40
    assert train.type == 'UDAPairDataset'
    assert cfg.train_dataloader.persistent_workers is False
    hooks = {h.type: h for h in cfg.custom_hooks}
    assert hooks['PseudoLabelHook'].interval == 10
    assert 'NoiseScheduleHook' in hooks
    # Stage 2 evaluates on its target list and starts from its source's
    # stage-1 checkpoint, whose config exists.
    assert cfg.val_dataloader.dataset.ann_file == train.target.ann_file
    stage1 = Path(cfg.load_from).parent.name
    assert (path.parent / f'{stage1}.py') in STAGE1
    assert cfg.load_from.endswith('/epoch_10.pth')
    stage1_cfg = Config.fromfile(str(path.parent / f'{stage1}.py'))
    assert (
        stage1_cfg.train_dataloader.dataset.ann_file == train.source.ann_file
    )
    assert len(cfg.param_scheduler) == 2
