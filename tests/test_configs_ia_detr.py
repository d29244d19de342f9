"""The IA-DETR configs carry the protocol and schedule their names claim;
the short names users type resolve to their primaries. (Every config builds
and trains a step in tests/test_configs.py.)"""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope

import xattn_mm.cls  # noqa: F401
import xattn_mm.det  # noqa: F401
import xattn_mm.det.engine  # noqa: F401  (FreezeBackboneHook, constructor)
from xattn_mm.det.datasets.synthetic_oneshot import (
    SYNTHETIC_CLASSES,
    generate_synthetic_oneshot,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / 'configs'
IA_DETR = CONFIG_DIR / 'ia_detr'
# short name: primary
ALIASES = {
    'voc_oneshot.py': 'ia-detr_swinv2-s_8xb2-12e_voc-oneshot.py',
    **{
        f'coco_oneshot_split{k}.py': (
            f'ia-detr_swinv2-s_8xb2-12e_coco-oneshot-split{k}.py'
        )
        for k in range(1, 5)
    },
    'synthetic_oneshot.py': 'ia-detr_r18-s8_1xb8-8e_synthetic-oneshot.py',
}
CONFIGS = sorted(p for p in IA_DETR.glob('*.py') if p.name not in ALIASES)
NAME = re.compile(
    r'ia-detr(-[a-z-]+)?_(swinv2-s|r50|r18-s8)_(\d)xb(\d)-(\d+)e(-stage1)?_'
    r'(voc-oneshot|coco-oneshot-split[1-4]|synthetic-oneshot)(-seen)?'
)
REAL = [p for p in CONFIGS if 'synthetic' not in p.name]
# The one-shot data of VOC and COCO: its exemplar pipelines are the official
# get_query_transforms (tests/test_det/test_exemplar_augment.py).
DATA = Config.fromfile(
    str(CONFIG_DIR / '_base_' / 'datasets' / 'oneshot_detection.py')
)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.fixture(autouse=True)
def mmdet_scope():
    init_default_scope('mmdet')


def load(path: Path) -> Config:
    return Config.fromfile(str(path))


def expected_protocol(path: Path):
    """(split, test_classes, stage) that the file name promises."""
    name = path.stem
    match = re.search(r'split(\d)', name)
    split = f'coco{match.group(1)}' if match else 'voc'
    assert match or 'voc' in name, name
    classes = 'seen' if name.endswith('-seen') else 'unseen'
    return split, classes, 1 if '-stage1_' in name else 2


@pytest.mark.parametrize('path', REAL, ids=rel)
def test_one_shot_data_and_metric(path):
    cfg = load(path)
    split, test_classes, stage = expected_protocol(path)
    train = cfg.train_dataloader.dataset
    assert (train.type, train.split) == ('OneShotDataset', split)
    assert not train.get('test_mode', False)
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        ds = loader.dataset
        assert (ds.type, ds.split, ds.test_mode) == (
            'OneShotDataset',
            split,
            True,
        )
        assert ds.test_classes == test_classes
        assert tuple(ds.draws) == (0, 1, 2, 3, 4)
        assert ds.dataset.test_mode
        assert ds.exemplar_pipeline == DATA.exemplar_test_pipeline
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        assert evaluator.type == 'OneShotCocoMetric'
    if split == 'voc':
        assert train.dataset.type == 'ConcatDataset'
        assert [(d.type, d.ann_file) for d in train.dataset.datasets] == [
            ('VOCDataset', 'VOC2007/ImageSets/Main/trainval.txt'),
            ('VOCDataset', 'VOC2012/ImageSets/Main/trainval.txt'),
        ]
        assert cfg.test_dataloader.dataset.dataset.ann_file == (
            'VOC2007/ImageSets/Main/test.txt'
        )
    else:
        assert (train.dataset.type, train.dataset.ann_file) == (
            'CocoDataset',
            'annotations/instances_train2017.json',
        )
        assert cfg.test_dataloader.dataset.dataset.ann_file == (
            'annotations/instances_val2017.json'
        )
    steps = [t.type for t in train.pipeline]
    assert steps[-1] == 'PackOneShotInputs'
    if stage == 1:
        assert 'RandomPatchExemplar' in steps
        assert cfg.model.freeze_backbone
    else:
        assert 'RandomPatchExemplar' not in steps
        assert not cfg.model.freeze_backbone
        assert train.exemplar_pipeline == DATA.exemplar_train_pipeline


@pytest.mark.parametrize('path', REAL, ids=rel)
def test_schedule(path):
    cfg = load(path)
    stage = expected_protocol(path)[2]
    optim = cfg.optim_wrapper
    assert optim.optimizer.type == 'AdamW'
    assert optim.optimizer.lr == 2e-4
    assert optim.optimizer.weight_decay == 0.05
    assert optim.clip_grad.max_norm == 0.1
    paramwise = optim.paramwise_cfg
    assert paramwise.norm_decay_mult == 0 and paramwise.bias_decay_mult == 0
    assert paramwise.custom_keys.box_rpb.decay_mult == 0
    if 'GlobalSwinTransformerV2' in cfg.model.backbone.type:
        assert optim.constructor == 'LayerDecayOptimWrapperConstructor'
        assert paramwise.layer_decay_rate == 0.9
        for key in ('cpb_mlp', 'logit_scale', 'q_bias', 'v_bias'):
            assert paramwise.custom_keys[key].decay_mult == 0
    else:
        assert paramwise.custom_keys.backbone.lr_mult == 0.1
    warmup, step = cfg.param_scheduler
    assert (warmup.type, warmup.by_epoch, warmup.end) == (
        'LinearLR',
        False,
        1000,
    )
    assert (step.type, step.by_epoch, step.milestones, step.gamma) == (
        'MultiStepLR',
        True,
        [11],
        0.1,
    )
    assert cfg.train_cfg.max_epochs == (30 if stage == 1 else 12)
    per_gpu = cfg.train_dataloader.batch_size
    assert not cfg.auto_scale_lr.enable
    assert cfg.auto_scale_lr.base_batch_size == 8 * per_gpu
    assert per_gpu == (3 if stage == 1 and 'coco' in path.stem else 2)
    # Frozen before the DDP wrap (stage 1) or re-wrapped by the hook.
    assert cfg.find_unused_parameters is False
    hooks = [h.type for h in cfg.get('custom_hooks', [])]
    if stage == 1:
        assert hooks == []
    else:
        assert cfg.custom_hooks == [
            dict(type='FreezeBackboneHook', start_epoch=2)
        ]
    assert cfg.visualizer.type == 'OneShotDetLocalVisualizer'


def test_custom_imports_register_the_engine_components():
    # A fresh interpreter: only what the configs import is registered.
    imports = sorted({m for p in REAL for m in load(p).custom_imports.imports})
    code = (
        'import importlib\n'
        f'for m in {imports!r}: importlib.import_module(m)\n'
        'from mmdet.registry import HOOKS, OPTIM_WRAPPER_CONSTRUCTORS\n'
        "missing = [n for n, r in [('FreezeBackboneHook', HOOKS), "
        "('LayerDecayOptimWrapperConstructor', OPTIM_WRAPPER_CONSTRUCTORS)]"
        ' if n not in r.module_dict]\n'
        "assert not missing, f'not registered by custom_imports: {missing}'\n"
    )
    proc = subprocess.run(
        [sys.executable, '-c', code],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_synthetic_config_is_the_embedded_default(tmp_path):
    makefile = (ROOT / 'Makefile').read_text()
    assert 'DEMO_CONFIG := configs/ia_detr/synthetic_oneshot.py' in makefile
    generated = re.search(
        r'generate_synthetic_oneshot\.py (\S+)', makefile
    ).group(1)
    cfg = load(IA_DETR / 'synthetic_oneshot.py')
    train, val = cfg.train_dataloader.dataset, cfg.val_dataloader.dataset
    assert train.split == val.split == 'synthetic'
    for ds in (train.dataset, val.dataset):
        assert ds.data_root.rstrip('/') == generated
        assert tuple(ds.metainfo.classes) == SYNTHETIC_CLASSES
    files = generate_synthetic_oneshot(str(tmp_path), num_train=4, num_val=2)
    assert {str(Path(f).relative_to(tmp_path)) for f in files.values()} == {
        train.dataset.ann_file,
        val.dataset.ann_file,
    }


def test_metafile_lists_every_ia_detr_config():
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    assert 'configs/ia_detr/metafile.yml' in index['Import']
    meta = yaml.safe_load((IA_DETR / 'metafile.yml').read_text())
    listed = [m['Config'] for m in meta['Models']]
    assert sorted(listed) == sorted(rel(p) for p in REAL)
    names = [m['Name'] for m in meta['Models']]
    assert len(set(names)) == len(names)
    for model in meta['Models']:
        assert model['In Collection'] == meta['Collections'][0]['Name']
        assert 'Weights' not in model


def random_image(rng, h=375, w=500):
    return rng.randint(0, 256, (h, w, 3), dtype=np.uint8)


def test_stage1_pipeline_augments_the_exemplar_not_the_target_boxes():
    cfg = load(IA_DETR / 'ia-detr_swinv2-s_8xb2-30e-stage1_voc-oneshot.py')
    steps = cfg.train_dataloader.dataset.pipeline
    assert steps[0].type == 'LoadImageFromFile'
    pipeline = Compose(steps[1:])
    rng = np.random.RandomState(0)
    for _ in range(4):
        img = random_image(rng)
        out = pipeline(dict(img=img, img_shape=img.shape[:2], img_id=0))
        target, exemplar = out['inputs']['target'], out['inputs']['exemplar']
        assert max(exemplar.shape[1:]) == 512  # short 510, long <= 512
        h, w = target.shape[1:]
        assert max(h, w) <= 642 and min(h, w) in range(400, 641)
        sample = out['data_samples']
        scale = np.array(sample.scale_factor * 2)
        box = sample.gt_instances.bboxes.tensor[0].numpy() / scale
        # the patch box, in original pixels, inside the original image
        assert (box >= -1e-3).all() and box[2] <= 500.01 and box[3] <= 375.01
        assert box[2] - box[0] >= 8 - 1e-3 and box[3] - box[1] >= 8 - 1e-3


def test_stage2_target_pipelines_cap_the_long_side_at_512():
    cfg = load(IA_DETR / 'voc_oneshot.py')
    rng = np.random.RandomState(0)
    train = Compose(cfg.train_dataloader.dataset.pipeline[2:])
    for _ in range(10):
        img = random_image(rng)
        out = train(
            dict(
                img=img,
                img_shape=img.shape[:2],
                img_id=0,
                exemplar_img=img[:40, :30],
                gt_bboxes=HorizontalBoxes(np.array([[10.0, 20, 300, 350]])),
                gt_bboxes_labels=np.zeros(1, dtype=np.int64),
                gt_ignore_flags=np.zeros(1, dtype=bool),
            )
        )
        h, w = out['data_samples'].img_shape
        assert max(h, w) <= 512 and min(h, w) >= 380
    resize = cfg.test_dataloader.dataset.pipeline[1]
    assert resize.type == 'Resize'
    img = random_image(rng)
    out = Compose([resize])(dict(img=img, img_shape=img.shape[:2]))
    assert out['img_shape'] == (384, 512)


@pytest.mark.parametrize('alias', sorted(ALIASES))
def test_short_names_are_their_primaries(alias):
    assert (IA_DETR / alias).read_text().count('\n') <= 4
    short = load(IA_DETR / alias).to_dict()
    primary = load(IA_DETR / ALIASES[alias]).to_dict()
    assert short == primary


@pytest.mark.parametrize('path', CONFIGS, ids=rel)
def test_names_follow_the_scheme(path):
    match = NAME.fullmatch(path.stem)
    assert match, path.name
    cfg = load(path)
    gpus, per_gpu, epochs = (int(match.group(i)) for i in (3, 4, 5))
    assert cfg.train_dataloader.batch_size == per_gpu
    assert cfg.train_cfg.max_epochs == epochs
    if 'synthetic' not in path.name:
        assert cfg.auto_scale_lr.base_batch_size == gpus * per_gpu
