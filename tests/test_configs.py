"""Every config the project ships, found by walking configs/ and
projects/*/configs/ (outside ``_base_`` folders, so a new folder is covered
without a new test): it parses, names the packages its types need, and its
model, shrunk by the one helper (:func:`xattn_mm.testing.configs.shrink`),
builds and trains a step with the config's optimizer. Configs whose shrunk
model and optimizer are the same (a grid's leaves, an alias and its
primary) train once. What each family's configs promise beyond that is in
tests/test_configs_{ia_detr,dacsm,stoch_ca,tmt}.py."""

import importlib
import json
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.structures import PixelData

from xattn_mm.testing.configs import CLS_SIZE, SEG_SIZE, shrink
from xattn_mm.testing.one_shot import one_shot_batch

ROOT = Path(__file__).resolve().parents[1]


def discover():
    """Every config file outside ``_base_`` folders."""
    found = []
    for top in ('configs', 'projects'):
        for path in sorted((ROOT / top).rglob('*.py')):
            parts = path.relative_to(ROOT).parts
            if '_base_' in parts or 'configs' not in parts:
                continue
            found.append(path)
    return found


CONFIGS = discover()
TRAINED = set()  # (shrunk model, optimizer) already trained a step


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_discovery_finds_every_family():
    folders = {p.relative_to(ROOT).parts[:2] for p in CONFIGS}
    assert {
        ('configs', 'ia_detr'),
        ('configs', 'dacsm'),
        ('configs', 'stoch_ca'),
        ('configs', 'tmt'),
        ('projects', 'ia_detr_stoch_ca'),
        ('projects', 'tmt_dacsm_backbone'),
    } <= folders
    assert len(CONFIGS) > 250


def inheritance_depth(path: Path) -> int:
    """Levels of project files above ``path`` (hosts' bases not counted)."""
    bases = Config._get_base_files(str(path))
    local = [b for b in bases if '::' not in b]
    return max(
        (1 + inheritance_depth(path.parent / b) for b in local), default=0
    )


def test_inheritance_is_at_most_four_levels():
    """At most four levels of the project's own bases (configs/README.md)."""
    deepest = max(CONFIGS, key=inheritance_depth)
    assert inheritance_depth(deepest) <= 4, rel(deepest)
    # The helper counts: a leaf, its benchmark base, the protocol, the runtime.
    leaf = (
        ROOT
        / 'configs/stoch_ca/transfer/'
        / ('stochca-l2sp_vit-base-p16_1xb16-10k_cub-448px-15pct.py')
    )
    assert inheritance_depth(leaf) == 4


def registry(scope: str):
    return importlib.import_module(f'{scope}.registry').MODELS


def cls_batch(model_cfg, labelled: bool = True) -> dict:
    from mmpretrain.structures import DataSample

    classes = model_cfg.head.num_classes
    samples = []
    for i in range(4):
        sample = DataSample()
        if labelled:
            sample.set_gt_label(i % classes)
        else:
            sample.set_field(torch.tensor([i % classes]), 'pseudo_label')
        samples.append(sample)
    inputs = [torch.randint(0, 255, (3, CLS_SIZE, CLS_SIZE)) for _ in range(4)]
    return dict(inputs=inputs, data_samples=samples)


def seg_batch(num_classes: int) -> dict:
    """Two 64 x 64 images with random labels."""
    from mmseg.structures import SegDataSample

    samples = []
    for _ in range(2):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, num_classes, (1, SEG_SIZE, SEG_SIZE))
        )
        shape = (SEG_SIZE, SEG_SIZE)
        sample.set_metainfo(
            dict(img_shape=shape, ori_shape=shape, pad_shape=shape)
        )
        samples.append(sample)
    inputs = [
        torch.randint(0, 256, (3, SEG_SIZE, SEG_SIZE)).float()
        for _ in range(2)
    ]
    return dict(inputs=inputs, data_samples=samples)


def train_batch(scope: str, model_cfg) -> dict:
    if scope == 'mmdet':
        stage1 = model_cfg.bbox_head.get('contrastive_cfg') is not None
        return one_shot_batch(num_boxes=(3, 1), stage1=stage1)
    if scope == 'mmseg':
        return seg_batch(model_cfg.decode_head.num_classes)
    if model_cfg.type == 'UDAClassifier':  # stage 2 batches are paired
        return dict(
            source=cls_batch(model_cfg), target=cls_batch(model_cfg, False)
        )
    return cls_batch(model_cfg)


@pytest.mark.parametrize('path', CONFIGS, ids=rel)
def test_builds_shrunk_and_trains_a_step(path):
    cfg = Config.fromfile(str(path))
    scope = cfg.default_scope
    assert scope in ('mmdet', 'mmpretrain', 'mmseg'), scope
    imports = cfg.custom_imports
    assert imports.allow_failed_imports is False
    assert any(m.startswith('xattn_mm.') for m in imports.imports)
    for module in imports.imports:
        importlib.import_module(module)
    model_cfg = shrink(cfg.model)
    key = json.dumps(
        [model_cfg.to_dict(), cfg.optim_wrapper.to_dict()],
        sort_keys=True,
        default=str,
    )
    if key in TRAINED:
        return
    with DefaultScope.overwrite_default_scope(scope):
        torch.manual_seed(0)
        model = registry(scope).build(model_cfg)
        model.init_weights()
        model.train()
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        log = model.train_step(train_batch(scope, model_cfg), wrapper)
    assert torch.isfinite(sum(v for k, v in log.items() if 'loss' in k))
    for name in model_cfg.get('regularizers', {}):
        assert f'loss_{name}' in log
    TRAINED.add(key)
