"""xattn_mm.compat.mmcv_numpy2.adjust_hue (mmcv.adjust_hue with a negative
hue under numpy 2) and HueWrapColorJitter, the transform that uses it."""

import cv2
import mmcv
import numpy as np
import pytest
from mmpretrain.datasets.transforms import ColorJitter

from xattn_mm.cls.datasets import HueWrapColorJitter
from xattn_mm.compat import mmcv_numpy2

IMG = np.random.default_rng(0).integers(0, 256, (16, 20, 3), dtype=np.uint8)
NUMPY2 = int(np.__version__.split('.')[0]) >= 2


def rotated(img, steps):
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV_FULL).astype(np.int64)
    hsv[..., 0] = (hsv[..., 0] + steps) % 256
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR_FULL)


@pytest.mark.parametrize('hue', [0.0, 0.13, 0.5])
@pytest.mark.parametrize('backend', ['cv2', 'pillow'])
def test_positive_hue_is_the_original(hue, backend):
    np.testing.assert_array_equal(
        mmcv_numpy2.adjust_hue(IMG, hue, backend=backend),
        mmcv.adjust_hue(IMG, hue, backend=backend),
    )


def test_negative_hue_rotates_the_other_way():
    # -0.2 turn = int(-51.0) = -51 steps = +205 steps of 256.
    np.testing.assert_array_equal(
        mmcv_numpy2.adjust_hue(IMG, -0.2, backend='cv2'), rotated(IMG, 205)
    )
    with pytest.raises(ValueError, match='not in'):
        mmcv_numpy2.adjust_hue(IMG, 0.7)


def jitter_outputs(cls, draws=30):
    jitter = cls(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.3)
    np.random.seed(0)
    return [jitter(dict(img=IMG.copy()))['img'] for _ in range(draws)]


@pytest.mark.skipif(not NUMPY2, reason='numpy 1 wraps the hue by itself')
def test_host_color_jitter_fails_where_ours_runs():
    with pytest.raises(OverflowError):
        jitter_outputs(ColorJitter)
    # mmcv is untouched: the host transform still fails after ours ran.
    outs = jitter_outputs(HueWrapColorJitter)
    assert all(o.shape == IMG.shape and o.dtype == np.uint8 for o in outs)
    with pytest.raises(OverflowError):
        mmcv.adjust_hue(IMG, -0.2, backend='cv2')


def test_same_draws_as_the_host_for_positive_hue():
    # hue=(0, 0.3): the host never overflows, so both must agree exactly.
    kwargs = dict(brightness=0.3, contrast=0.3, saturation=0.3, hue=(0, 0.3))
    outs = []
    for cls in (ColorJitter, HueWrapColorJitter):
        jitter, _ = cls(**kwargs), np.random.seed(1)
        outs.append([jitter(dict(img=IMG.copy()))['img'] for _ in range(10)])
    for ours, host in zip(*outs):
        np.testing.assert_array_equal(ours, host)
