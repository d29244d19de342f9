"""configs/tmt: the vanilla / TMT twins, source checkpoints and class counts
are consistent; the dataset bases find files laid out as the datasets ship.
(Every leaf builds shrunk and trains a step in tests/test_configs.py.)"""

import re
from pathlib import Path

import pytest
from mmengine.config import Config, ConfigDict
from mmengine.registry import DefaultScope
from mmseg.registry import DATASETS

import xattn_mm.seg  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
TMT = ROOT / 'configs' / 'tmt'
CONFIGS = sorted(TMT.glob('*.py'))
VANILLA = [p for p in CONFIGS if p.name.startswith('vanilla_')]
SOURCES = [p for p in CONFIGS if p.name.startswith('source_')]
PAIRS = [
    'cityscapes-to-acdc',
    'gta5-to-cityscapes',
    'potsdam-to-vaihingen',
    'loveda-urban-to-loveda-rural',
    'ade20k-to-cityscapes',
]


@pytest.fixture(autouse=True)
def mmseg_scope():
    # Scoped to each test: a global default scope would break the other
    # hosts' tests that run after these.
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield


def load(path: Path) -> Config:
    return Config.fromfile(str(path))


def dataset_classes(dataset: ConfigDict) -> int:
    if dataset.type == 'ConcatDataset':
        counts = {dataset_classes(d) for d in dataset.datasets}
        assert len(counts) == 1
        return counts.pop()
    return len(DATASETS.get(dataset.type).METAINFO['classes'])


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_heads_match_the_dataset_classes_and_mIoU_is_the_metric(path):
    cfg = load(path)
    classes = dataset_classes(cfg.train_dataloader.dataset)
    assert cfg.model.decode_head.num_classes == classes
    assert cfg.model.auxiliary_head.num_classes == classes
    assert dataset_classes(cfg.val_dataloader.dataset) == classes
    assert cfg.val_evaluator.type == 'IoUMetric'
    assert cfg.val_evaluator.iou_metrics == ['mIoU']
    assert cfg.custom_imports.imports == ['xattn_mm.seg']


def test_every_pair_has_a_vanilla_and_a_tmt_twin():
    pairs = sorted(re.search(r'_([a-z0-9-]+-to-[a-z0-9-]+)-', p.name)[1]
                   for p in VANILLA)  # fmt: skip
    assert pairs == sorted(PAIRS)
    assert len(CONFIGS) == 3 * len(PAIRS)


@pytest.mark.parametrize('vanilla', VANILLA, ids=lambda p: p.stem)
def test_tmt_twin_differs_only_in_the_tmt_parts(vanilla):
    tmt = load(vanilla.with_name(vanilla.name.replace('vanilla_', 'tmt_')))
    base = load(vanilla)
    assert base.model.type == 'EncoderDecoder'
    assert tmt.model.type == 'TMTEncoderDecoder'
    assert tmt.model.neck.type == 'TMANeck'
    assert tmt.model.neck.rescales == base.model.neck.rescales
    assert tmt.model.estimator.type == 'ACTE'
    tmt_cfg, base_cfg = tmt.to_dict(), base.to_dict()
    tmt_model, base_model = tmt_cfg.pop('model'), base_cfg.pop('model')
    for key in ('tma_mode', 'num_regions', 'transferability_weight'):
        tmt_cfg.pop(key)
    assert tmt_cfg == base_cfg
    for key in ('type', 'neck'):
        base_model.pop(key)
    for key in ('type', 'neck', 'estimator', 'source_checkpoint',
                'test_with_source'):  # fmt: skip
        tmt_model.pop(key)
    tmt_model.pop('source_num_classes', None)
    assert tmt_model == base_model
    # The frozen source model is the checkpoint fine-tuning starts from.
    assert tmt.model.source_checkpoint == tmt.load_from == base.load_from


@pytest.mark.parametrize('vanilla', VANILLA, ids=lambda p: p.stem)
def test_fine_tuning_starts_from_the_last_source_checkpoint(vanilla):
    cfg = load(vanilla)
    match = re.fullmatch(r'work_dirs/(.+)/iter_(\d+)\.pth', cfg.load_from)
    assert match, cfg.load_from
    source = TMT / f'{match[1]}.py'
    assert source in SOURCES
    source_cfg = load(source)
    assert int(match[2]) == source_cfg.train_cfg.max_iters
    assert source_cfg.param_scheduler[-1].end == source_cfg.train_cfg.max_iters
    source_name = re.search(r'_([a-z0-9-]+)-to-', vanilla.name)[1]
    assert f'_{source_name}-' in source.name
    assert cfg.train_cfg.max_iters == 20000
    tmt = load(vanilla.with_name(vanilla.name.replace('vanilla_', 'tmt_')))
    source_classes = source_cfg.model.decode_head.num_classes
    if source_classes != cfg.model.decode_head.num_classes:
        assert tmt.model.source_num_classes == source_classes
    else:
        assert 'source_num_classes' not in tmt.model


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'')


def test_acdc_base_reads_every_condition(tmp_path):
    for cond in ('fog', 'night', 'rain', 'snow'):
        for split in ('train', 'val'):
            stem = f'GOPR0{len(cond)}_frame_{split}'
            touch(
                tmp_path / f'rgb_anon/{cond}/{split}/GOPR/{stem}_rgb_anon.png'
            )
            touch(
                tmp_path
                / f'gt/{cond}/{split}/GOPR/{stem}_gt_labelTrainIds.png'
            )
            touch(tmp_path / f'gt/{cond}/{split}/GOPR/{stem}_gt_labelIds.png')
    cfg = load(ROOT / 'configs/_base_/datasets/acdc.py')
    for loader, split in ((cfg.train_dataloader, 'train'),
                          (cfg.val_dataloader, 'val')):  # fmt: skip
        for d in loader.dataset.datasets:
            d.data_root = str(tmp_path)
        dataset = DATASETS.build(loader.dataset)
        assert len(dataset) == 4
        for info in map(dataset.get_data_info, range(4)):
            assert f'/{split}/' in info['img_path']
            assert info['seg_map_path'].endswith('_gt_labelTrainIds.png')


def test_gta5_and_loveda_bases_read_the_extracted_layout(tmp_path):
    touch(tmp_path / 'gta5/images/00001.png')
    touch(tmp_path / 'gta5/labels/00001.png')
    touch(tmp_path / 'gta5/labels/00001_labelTrainIds.png')
    cfg = load(ROOT / 'configs/_base_/datasets/gta5.py')
    cfg.train_dataloader.dataset.data_root = str(tmp_path / 'gta5')
    info = DATASETS.build(cfg.train_dataloader.dataset).get_data_info(0)
    assert info['seg_map_path'].endswith('labels/00001_labelTrainIds.png')

    for domain in ('Urban', 'Rural'):
        for split in ('Train', 'Val'):
            touch(tmp_path / f'loveDA/{split}/{domain}/images_png/1.png')
            touch(tmp_path / f'loveDA/{split}/{domain}/masks_png/1.png')
    for name, domain in (('urban', 'Urban'), ('rural', 'Rural')):
        cfg = load(ROOT / f'configs/_base_/datasets/loveda_{name}.py')
        for loader, split in ((cfg.train_dataloader, 'Train'),
                              (cfg.val_dataloader, 'Val')):  # fmt: skip
            loader.dataset.data_root = str(tmp_path / 'loveDA')
            info = DATASETS.build(loader.dataset).get_data_info(0)
            assert f'{split}/{domain}/images_png/1.png' in info['img_path']
            assert f'{split}/{domain}/masks_png/1.png' in info['seg_map_path']


def test_metafile_lists_every_tmt_config():
    import yaml

    meta = yaml.safe_load((TMT / 'metafile.yml').read_text())
    listed = sorted(m['Config'] for m in meta['Models'])
    assert listed == [f'configs/tmt/{p.name}' for p in CONFIGS]
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    assert 'configs/tmt/metafile.yml' in index['Import']
