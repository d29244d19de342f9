import numpy as np
import pytest
import torch
from mmdet.registry import MODELS, TRANSFORMS
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

import xattn_mm.det  # noqa: F401
from xattn_mm.testing.one_shot import tiny_ia_detr_cfg


@pytest.fixture(autouse=True)
def mmdet_scope():
    init_default_scope('mmdet')


def _results(seed, h=64, w=80):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return dict(
        img=img,
        img_shape=(h, w),
        ori_shape=(h, w),
        img_id=seed,
        img_path=f'{seed}.png',
        scale_factor=(1.0, 1.0),
    )


def test_random_patch_exemplar_is_the_boxed_patch():
    np.random.seed(0)
    transform = TRANSFORMS.build(dict(type='RandomPatchExemplar'))
    for seed in range(20):
        results = transform(_results(seed))
        ((x1, y1, x2, y2),) = results['gt_bboxes'].tensor.int().tolist()
        assert 8 <= x2 - x1 <= 72 and 8 <= y2 - y1 <= 56
        assert 0 <= x1 and x2 <= 80 and 0 <= y1 and y2 <= 64
        np.testing.assert_array_equal(
            results['exemplar_img'], results['img'][y1:y2, x1:x2]
        )
        assert results['gt_bboxes_labels'].tolist() == [0]


def test_random_patch_exemplar_resizes_and_rejects_small_images():
    transform = TRANSFORMS.build(
        dict(type='RandomPatchExemplar', exemplar_size=(24, 16))
    )
    assert transform(_results(0))['exemplar_img'].shape == (16, 24, 3)
    with pytest.raises(ValueError, match='smaller than 2 \\* min_size'):
        transform(_results(0, h=12, w=40))


def test_stage1_mode_runs_loss_and_predict_from_config():
    pipeline = [
        TRANSFORMS.build(t)
        for t in (
            dict(type='RandomPatchExemplar', exemplar_size=(32, 32)),
            dict(type='PackOneShotInputs'),
        )
    ]
    samples = []
    for seed, size in ((0, (64, 80)), (1, (48, 64))):
        results = _results(seed, *size)
        for t in pipeline:
            results = t(results)
        samples.append(results)
    batch = pseudo_collate(samples)
    assert set(batch['inputs']) == {'target', 'exemplar'}
    torch.manual_seed(0)
    model = MODELS.build(tiny_ia_detr_cfg(freeze_backbone=True))
    model.init_weights()
    losses = model(**model.data_preprocessor(batch, True), mode='loss')
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses['loss_bbox'] > 0
    model.eval()
    with torch.no_grad():
        results = model(
            **model.data_preprocessor(batch, False), mode='predict'
        )
    assert len(results[0].pred_instances) == 10


def test_pack_needs_an_exemplar():
    with pytest.raises(KeyError, match='exemplar_img'):
        TRANSFORMS.build(dict(type='PackOneShotInputs'))(_results(0))
