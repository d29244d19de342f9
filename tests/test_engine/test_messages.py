"""Errors that name the file or field and what was expected (the cases of
docs/reliability.md not covered beside their components)."""

import pytest
from mmcv.transforms import LoadImageFromFile
from mmdet.registry import DATASETS
from mmengine.config import Config
from mmengine.registry import DefaultScope

import xattn_mm.det  # noqa: F401  (registers the one-shot dataset)
from xattn_mm.engine.pipeline import apply_pipeline, build_dataset
from xattn_mm.engine.tool_utils import build_runner


def test_an_empty_image_is_named(tmp_path):
    path = tmp_path / 'empty.jpg'
    path.touch()
    with pytest.raises(Exception, match='empty.jpg') as info:
        apply_pipeline(LoadImageFromFile(), dict(img_path=str(path)))
    assert 'empty, truncated or not an image' in str(info.value)


def test_annotation_json_that_does_not_parse_is_named(tmp_path):
    ann = tmp_path / 'instances.json'
    ann.write_text('{"images": [')
    cfg = dict(
        type='CocoDataset',
        data_root=str(tmp_path),
        ann_file='instances.json',
        data_prefix=dict(img=''),
        pipeline=[],
    )
    # Whatever scope an earlier test left: CocoDataset is mmdet's.
    with DefaultScope.overwrite_default_scope('mmdet'):
        with pytest.raises(ValueError, match='instances.json is not valid'):
            build_dataset(DATASETS, cfg)


def test_a_config_without_custom_imports_gets_the_hint(tmp_path):
    cfg = Config(
        dict(
            default_scope='mmdet',
            model=dict(type='NoSuchDetector'),
            work_dir=str(tmp_path),
        )
    )
    with pytest.raises(KeyError, match=r"imports=\['xattn_mm.det'\]"):
        build_runner(cfg)
