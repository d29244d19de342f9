"""Every config under configs/stoch_ca carries the protocol its name
promises; the StochCA twins differ from their baselines only in the
backbone; the generated files are up to date. (Every config builds shrunk
and trains a step in tests/test_configs.py.)"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mmengine.config import Config
from mmengine.registry import init_default_scope

import xattn_mm.cls  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
STOCH_CA = ROOT / 'configs' / 'stoch_ca'
CONFIGS = sorted(p for p in STOCH_CA.rglob('*.py') if '_base_' not in p.parts)
DG = [p for p in CONFIGS if p.parent.name == 'domain_generalization']
TRANSFER = [p for p in CONFIGS if p.parent.name == 'transfer']


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    init_default_scope('mmpretrain')


def vit_of(model_cfg):
    backbone = model_cfg.backbone
    return backbone.backbone if backbone.type == 'StochCA' else backbone


def test_generated_configs_are_up_to_date():
    proc = subprocess.run(
        [sys.executable, 'tools/misc/generate_stoch_ca_configs.py', '--check'],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(DG) == 4 * (4 + 4 + 4 + 4 + 6)  # plain, stochca, miro, both
    assert len(TRANSFER) == 4 * (2 * 4 + 4)


@pytest.mark.parametrize('path', CONFIGS, ids=rel)
def test_backbone_starts_from_the_pretrained_vit(path):
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports.imports == ['xattn_mm.cls']
    assert cfg.default_scope == 'mmpretrain'
    vit = vit_of(cfg.model)
    assert vit.init_cfg.type == 'Pretrained'
    assert vit.init_cfg.prefix == 'backbone.'
    # 448 px: the position embedding resized offline as the official code
    # does (vit_to_mmpretrain.py --img-size 448), never at load time.
    suffix = '_448px.pth' if vit.img_size == 448 else '-in1k.pth'
    assert vit.init_cfg.checkpoint.endswith(suffix)


def twin_pairs(paths):
    for path in paths:
        match = re.match(r'(stochca)(-\w+)?_(.*)', path.stem)
        if match:
            yield path, path.with_name(f'finetune_{match.group(3)}.py')


@pytest.mark.parametrize(
    'stoch_ca, baseline', list(twin_pairs(CONFIGS)), ids=lambda p: p.stem
)
def test_stoch_ca_twin_differs_only_in_the_backbone(stoch_ca, baseline):
    ours = Config.fromfile(str(stoch_ca)).to_dict()
    base = Config.fromfile(str(baseline)).to_dict()
    backbone = ours['model'].pop('backbone')
    assert backbone['type'] == 'StochCA'
    assert backbone['p'] == 0.1
    assert backbone['backbone'] == base['model'].pop('backbone')
    for key in ('type', 'regularizers'):
        ours['model'].pop(key, None)
        base['model'].pop(key, None)
    for d in (ours, base):
        d.pop('optim_wrapper')
    assert ours == base


@pytest.mark.parametrize('path', DG, ids=rel)
def test_domainbed_protocol(path):
    cfg = Config.fromfile(str(path))
    dataset, test_domain = re.search(
        r'5001it_(\w+?)-(\w+)$', path.stem
    ).groups()
    assert test_domain == cfg.test_domain.lower().replace(' ', '_')
    assert cfg.test_domain in cfg.domains
    assert cfg.data_root.startswith('data/domainbed/')
    for loader, split in (
        (cfg.train_dataloader, 'train'),
        (cfg.val_dataloader, 'val'),
        (cfg.test_dataloader, 'test'),
    ):
        ds = loader.dataset
        assert (ds.type, ds.split) == ('LeaveOneDomainOut', split)
        assert (ds.data_root, ds.domains, ds.test_domain) == (
            cfg.data_root,
            cfg.domains,
            cfg.test_domain,
        )
        assert (ds.holdout_fraction, ds.trial_seed) == (0.2, 0)
    train = cfg.train_dataloader
    assert train.batch_size == 32
    assert train.batch_sampler.type == 'DomainBalancedBatchSampler'
    assert train.sampler.type == 'InfiniteSampler'
    steps = [t.type for t in train.dataset.pipeline]
    assert steps == [
        'LoadImageFromFile',
        'RandomResizedCrop',
        'RandomFlip',
        'HueWrapColorJitter',
        'RandomGrayscale',
        'PackInputs',
    ]
    assert train.dataset.pipeline[1].crop_ratio_range == (0.7, 1.0)
    assert cfg.optim_wrapper.optimizer == dict(
        type='AdamW', lr=1e-5, weight_decay=1e-2
    )
    assert cfg.param_scheduler == []
    assert (cfg.train_cfg.max_iters, cfg.train_cfg.val_interval) == (5001, 200)
    assert cfg.val_evaluator.type == 'DomainAccuracy'
    assert cfg.default_hooks.checkpoint.save_best == 'domain/train_val'
    assert vit_of(cfg.model).img_size == 224
    num_classes = {
        'pacs': 7,
        'vlcs': 5,
        'officehome': 65,
        'terraincognita': 10,
        'domainnet': 345,
    }[dataset]
    assert cfg.model.head.num_classes == num_classes
    assert cfg.model.data_preprocessor.num_classes == num_classes


@pytest.mark.parametrize('path', TRANSFER, ids=rel)
def test_transfer_protocol(path):
    cfg = Config.fromfile(str(path))
    name, ratio = re.search(r'10k_(\w+)-448px-(\d+)pct$', path.stem).groups()
    train = cfg.train_dataloader
    assert train.batch_size == 16
    assert (train.dataset.type, train.dataset.ratio) == (
        'StratifiedSubset',
        int(ratio) / 100,
    )
    inner_type = {
        'cub': 'CUB',
        'aircraft': 'FGVCAircraft',
        'cars': 'StanfordCars',
        'dogs': 'CustomDataset',
    }[name]
    assert train.dataset.dataset.type == inner_type
    assert cfg.test_dataloader.dataset.type == inner_type
    assert [t.type for t in train.dataset.dataset.pipeline] == [
        'LoadImageFromFile',
        'Resize',
        'RandomCrop',
        'RandomFlip',
        'PackInputs',
    ]
    assert train.dataset.dataset.pipeline[1].scale == (550, 550)
    assert cfg.test_dataloader.dataset.pipeline[2] == dict(
        type='CenterCrop', crop_size=448
    )
    assert vit_of(cfg.model).img_size == 448
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'AdamW'
    assert optimizer.lr == pytest.approx(5e-4 * 16 / 512)
    assert optimizer.weight_decay == 0.05
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.end) == ('LinearLR', 100)
    assert (cosine.type, cosine.end, cosine.eta_min) == (
        'CosineAnnealingLR',
        10000,
        0.0,
    )
    assert cfg.train_cfg.max_iters == 10000
    assert cfg.auto_scale_lr.base_batch_size == 16
    regularizers = cfg.model.get('regularizers', {})
    if 'l2sp' in path.stem:
        assert regularizers == dict(
            l2sp=dict(type='L2SPRegularizer', loss_weight=0.01)
        )
        custom = cfg.optim_wrapper.paramwise_cfg.custom_keys
        assert custom == {'backbone': dict(decay_mult=0.0)}
    elif 'bss' in path.stem:
        assert regularizers == dict(
            bss=dict(type='BSSRegularizer', loss_weight=0.001, num_singular=1)
        )
    else:
        assert not regularizers


@pytest.mark.parametrize('path', [p for p in DG if 'miro' in p.stem], ids=rel)
def test_miro_variants_use_miros_hyper_parameters(path):
    cfg = Config.fromfile(str(path))
    assert cfg.model.type == 'RegularizedImageClassifier'
    miro = cfg.model.regularizers.miro
    assert miro.type == 'MIRORegularizer'
    # MIRO's searched lambda (kakaobrain/miro README): 0.01 on PACS, VLCS.
    small = re.search(r'5001it_(pacs|vlcs)-', path.stem)
    assert miro.loss_weight == (0.01 if small else 0.1)
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert keys == {'regularizers.miro': dict(lr_mult=10.0)}
    stoch_ca = path.stem.startswith('stochca-miro_')
    assert (cfg.model.backbone.type == 'StochCA') == stoch_ca


def test_metafile_lists_every_config():
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    assert 'configs/stoch_ca/metafile.yml' in index['Import']
    meta = yaml.safe_load((STOCH_CA / 'metafile.yml').read_text())
    listed = {m['Config'] for m in meta['Models']}
    assert listed == {rel(p) for p in CONFIGS}
    assert all(m['In Collection'] == 'StochCA' for m in meta['Models'])
