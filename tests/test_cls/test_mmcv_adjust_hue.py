"""xattn_mm.compat.mmcv_numpy2: mmcv.adjust_hue with a negative hue under
numpy 2, and mmpretrain's ColorJitter through it."""

import cv2
import mmcv
import numpy as np
import pytest
from mmpretrain.datasets.transforms import ColorJitter

import xattn_mm.cls  # noqa: F401  (applies the fix)
from xattn_mm.compat import mmcv_numpy2

IMG = np.random.default_rng(0).integers(0, 256, (16, 20, 3), dtype=np.uint8)


def rotated(img, steps):
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV_FULL).astype(np.int64)
    hsv[..., 0] = (hsv[..., 0] + steps) % 256
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR_FULL)


@pytest.mark.skipif(
    int(np.__version__.split('.')[0]) < 2, reason='numpy 1 wraps by itself'
)
def test_the_host_function_fails_and_is_replaced():
    with pytest.raises(OverflowError):
        mmcv_numpy2.original_adjust_hue(IMG, -0.2, backend='cv2')
    assert mmcv.adjust_hue is mmcv_numpy2.adjust_hue
    assert mmcv.image.adjust_hue is mmcv_numpy2.adjust_hue


@pytest.mark.parametrize('hue', [0.0, 0.13, 0.5])
@pytest.mark.parametrize('backend', ['cv2', 'pillow'])
def test_positive_hue_is_the_original(hue, backend):
    np.testing.assert_array_equal(
        mmcv_numpy2.adjust_hue(IMG, hue, backend=backend),
        mmcv_numpy2.original_adjust_hue(IMG, hue, backend=backend),
    )


def test_negative_hue_rotates_the_other_way():
    # -0.2 turn = int(-51.0) = -51 steps = +205 steps of 256.
    np.testing.assert_array_equal(
        mmcv_numpy2.adjust_hue(IMG, -0.2, backend='cv2'), rotated(IMG, 205)
    )
    with pytest.raises(ValueError, match='not in'):
        mmcv_numpy2.adjust_hue(IMG, 0.7)


def test_color_jitter_with_hue_runs():
    jitter = ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.3)
    np.random.seed(0)
    for _ in range(30):
        out = jitter(dict(img=IMG.copy()))['img']
        assert out.shape == IMG.shape and out.dtype == np.uint8
