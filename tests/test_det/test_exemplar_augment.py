import copy
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
from mmdet.registry import TRANSFORMS
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from PIL import Image, ImageEnhance, ImageFilter

import xattn_mm.det  # noqa: F401
from xattn_mm.det.datasets.transforms import (
    adjust_color_jitter,
    gaussian_blur,
    warp_perspective,
)

# The shipped one-shot data: its exemplar pipelines.
DATA = Config.fromfile(
    str(
        Path(__file__).resolve().parents[2]
        / 'configs/_base_/datasets/oneshot_detection.py'
    )
)


def exemplar_train_pipeline():
    return copy.deepcopy(DATA.exemplar_train_pipeline)


def exemplar_test_pipeline():
    return copy.deepcopy(DATA.exemplar_test_pipeline)


@pytest.fixture(autouse=True)
def mmdet_scope():
    init_default_scope('mmdet')


def _image(seed=0, h=80, w=100):
    """A smooth colour BGR image (few values at 0 or 255)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(20, 236, (8, 10, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _pil(img):
    return Image.fromarray(np.ascontiguousarray(img[..., ::-1]))


def _from_pil(pil):
    return np.array(pil)[..., ::-1].astype(int)


def _run(cfg, img, seed=0):
    np.random.seed(seed)
    transform = TRANSFORMS.build(cfg)
    out = transform(dict(img=img.copy(), img_shape=img.shape[:2]))['img']
    assert out.shape == img.shape and out.dtype == img.dtype
    return out


# --- colour jitter ---------------------------------------------------------


def test_brightness_scales_a_constant_image():
    img = np.full((4, 5, 3), 100, np.uint8)
    assert (adjust_color_jitter(img, brightness=1.3) == 130).all()
    assert (adjust_color_jitter(img, brightness=0.6) == 60).all()
    assert (adjust_color_jitter(img, brightness=3.0) == 255).all()


def test_contrast_and_saturation_blend_with_luma():
    img = _image()
    luma = img.astype(np.float64) @ [0.114, 0.587, 0.299]
    flat = adjust_color_jitter(img, contrast=0.0)
    assert np.ptp(flat) == 0 and abs(int(flat[0, 0, 0]) - luma.mean()) <= 1
    gray = adjust_color_jitter(img, saturation=0.0).astype(int)
    assert (gray == gray[..., :1]).all()
    assert np.abs(gray[..., 0] - luma).max() <= 1
    const = np.full((4, 5, 3), 77, np.uint8)
    assert (adjust_color_jitter(const, contrast=1.4) == 77).all()


@pytest.mark.parametrize(
    'enhance, name',
    [
        (ImageEnhance.Brightness, 'brightness'),
        (ImageEnhance.Contrast, 'contrast'),
        (ImageEnhance.Color, 'saturation'),
    ],
)
@pytest.mark.parametrize('factor', [0.6, 1.37])
def test_jitter_matches_pil_enhance(enhance, name, factor):
    # torchvision's PIL path, which the official code runs.
    img = _image(1)
    expected = _from_pil(enhance(_pil(img)).enhance(factor))
    got = adjust_color_jitter(img, **{name: factor}).astype(int)
    assert np.abs(got - expected).max() <= 1


def test_hue_shift():
    img = _image(2)
    for turns in (0.0, 1.0, -1.0):
        got = adjust_color_jitter(img, hue=turns).astype(int)
        assert np.abs(got - img).max() <= 1
    shifted = adjust_color_jitter(img, hue=0.1)
    assert np.abs(shifted.astype(int) - img).mean() > 5
    # red -> cyan half a turn away, green -> blue a third of a turn on
    red_green = np.array([[[0, 0, 255], [0, 255, 0]]], np.uint8)
    assert adjust_color_jitter(red_green, hue=0.5)[0, 0].tolist() == [
        255,
        255,
        0,
    ]
    assert adjust_color_jitter(red_green, hue=1 / 3)[0, 1].tolist() == [
        255,
        0,
        0,
    ]


def test_jitter_order_matters_and_rejects_gray_images():
    img = _image(3)
    bc = adjust_color_jitter(img, brightness=1.4, contrast=0.6, order=(0, 1))
    cb = adjust_color_jitter(img, brightness=1.4, contrast=0.6, order=(1, 0))
    assert not np.array_equal(bc, cb)
    assert np.array_equal(adjust_color_jitter(img, 1.4, order=()), img)
    with pytest.raises(ValueError, match='H, W, 3'):
        adjust_color_jitter(img[..., 0], brightness=1.2)


def test_exemplar_color_jitter_transform():
    img = _image(4)
    cfg = dict(
        type='ExemplarColorJitter',
        brightness=0.4,
        contrast=0.4,
        saturation=0.4,
        hue=0.1,
    )
    assert np.array_equal(_run(dict(cfg, prob=0.0), img), img)
    assert not np.array_equal(_run(dict(cfg, prob=1.0), img), img)
    # brightness factors are drawn from [0.6, 1.4], both sides of 1
    const = np.full((2, 2, 3), 100, np.uint8)
    values = [
        _run(dict(type='ExemplarColorJitter', brightness=0.4), const, s)[
            0, 0, 0
        ]
        for s in range(50)
    ]
    assert 60 <= min(values) < 85 and 115 < max(values) <= 140
    assert 'hue=(-0.1, 0.1)' in repr(TRANSFORMS.build(cfg))
    with pytest.raises(ValueError):
        TRANSFORMS.build(dict(type='ExemplarColorJitter', hue=0.6))


# --- grayscale (mmcv's RandomGrayscale as the pipeline configures it) -------


def test_grayscale_keeps_three_equal_channels():
    img = _image(5)
    cfg = next(
        t for t in exemplar_train_pipeline() if t['type'] == 'RandomGrayscale'
    )
    random.seed(0)
    assert np.array_equal(_run(dict(cfg, prob=0.0), img), img)
    out = _run(dict(cfg, prob=1.0), img).astype(int)
    assert (out == out[..., :1]).all()
    expected = _from_pil(_pil(img).convert('L').convert('RGB'))
    assert np.abs(out - expected).max() <= 1


# --- perspective -----------------------------------------------------------


def _pil_perspective(img, endpoints):
    """PIL's perspective warp with torchvision's coefficients."""
    h, w = img.shape[:2]
    start = [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]
    a, b = [], []
    for (x, y), (u, v) in zip(endpoints, start):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b += [u, v]
    coeffs = np.linalg.solve(np.array(a, float), np.array(b, float))
    pil = _pil(img).transform(
        (w, h), Image.PERSPECTIVE, coeffs.tolist(), Image.BILINEAR, fillcolor=0
    )
    return _from_pil(pil)


def test_warp_perspective_matches_pil_and_fills_corners():
    img = _image(6)
    h, w = img.shape[:2]
    corners = [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]
    assert np.array_equal(warp_perspective(img, corners), img)
    endpoints = [[12, 5], [w - 21, 9], [w - 4, h - 16], [7, h - 3]]
    got = warp_perspective(img, endpoints).astype(int)
    assert (got[0, 0] == 0).all() and (got[0, -1] == 0).all()
    assert (got[-1, -1] == 0).all() and (got[-1, 0] == 0).all()
    assert (got[h // 2, w // 2] > 0).all()
    expected = _pil_perspective(img, endpoints)
    inside = (got.min(-1) > 0) & (expected.min(-1) > 0)
    inside = cv2.erode(inside.astype(np.uint8), np.ones((3, 3))) > 0
    assert inside.sum() > 0.5 * h * w
    assert np.abs(got - expected)[inside].max() <= 2


def test_random_perspective_transform():
    img = _image(7)
    h, w = img.shape[:2]
    cfg = dict(type='RandomPerspective', distortion_scale=0.5)
    assert np.array_equal(_run(dict(cfg, prob=0.0), img), img)
    assert np.array_equal(
        _run(dict(cfg, distortion_scale=0.0, prob=1.0), img), img
    )
    const = np.full((h, w, 3), 200, np.uint8)
    out = _run(dict(cfg, prob=1.0), const)
    assert not np.array_equal(out, const)
    corners = out[[0, 0, -1, -1], [0, -1, -1, 0]]
    assert (corners == 0).all(axis=1).any()
    assert (out[h // 2, w // 2] == 200).all()
    # corners move inward by at most int(0.5 * half side) pixels
    transform = TRANSFORMS.build(dict(cfg, prob=1.0))
    np.random.seed(0)
    ends = np.array([transform._random_endpoints(w, h) for _ in range(300)])
    dx, dy = int(0.5 * (w // 2)), int(0.5 * (h // 2))
    assert ends[:, [0, 3], 0].min() == 0 and ends[:, [0, 3], 0].max() == dx
    assert ends[:, [1, 2], 0].min() == w - dx - 1
    assert ends[:, [1, 2], 0].max() == w - 1
    assert ends[:, [0, 1], 1].min() == 0 and ends[:, [0, 1], 1].max() == dy
    assert ends[:, [2, 3], 1].min() == h - dy - 1
    assert ends[:, [2, 3], 1].max() == h - 1


# --- blur ------------------------------------------------------------------


def test_gaussian_blur_matches_cv2_and_pil():
    img = _image(8)
    expected = cv2.GaussianBlur(
        img, (0, 0), 1.5, borderType=cv2.BORDER_REPLICATE
    )
    assert np.array_equal(gaussian_blur(img, 1.5), expected)
    out = _run(dict(type='RandomGaussianBlur', sigma=1.5, prob=1.0), img)
    assert np.array_equal(out, expected)
    pil = _from_pil(_pil(img).filter(ImageFilter.GaussianBlur(radius=1.5)))
    assert np.abs(out.astype(int) - pil).max() <= 2


def test_random_gaussian_blur_transform():
    rng = np.random.default_rng(9)
    noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    cfg = dict(type='RandomGaussianBlur', sigma=(0.1, 2.0))
    assert np.array_equal(_run(dict(cfg, prob=0.0), noise), noise)
    # sigma near 0.1 rounds back to the input; from 0.5 on it smooths
    for seed in range(5):
        out = _run(dict(cfg, prob=1.0), noise, seed)
        assert out.astype(float).var() <= noise.astype(float).var()
        out = _run(dict(cfg, sigma=(0.5, 2.0), prob=1.0), noise, seed)
        assert out.astype(float).var() < 0.8 * noise.astype(float).var()
    blurred = _run(dict(cfg, sigma=(1.0, 2.0), prob=1.0), noise)
    assert blurred.astype(float).var() < 0.2 * noise.astype(float).var()
    with pytest.raises(ValueError):
        TRANSFORMS.build(dict(type='RandomGaussianBlur', sigma=(0.0, 1.0)))


# --- pipelines -------------------------------------------------------------


@pytest.fixture
def exemplar_file(tmp_path):
    img = _image(10, h=120, w=160)
    path = str(tmp_path / 'target.png')
    assert cv2.imwrite(path, img)
    return path, img


def _exemplar_results(path):
    box = np.array([30.0, 20.0, 90.0, 100.0], dtype=np.float32)
    return dict(img_path=path, exemplar_bbox=box)


def test_test_pipeline_is_a_pil_resize_of_the_crop(exemplar_file):
    path, img = exemplar_file
    out = Compose(exemplar_test_pipeline())(_exemplar_results(path))['img']
    crop = _pil(img[20:100, 30:90])
    expected = _from_pil(crop.resize((300, 300), Image.BILINEAR))
    assert np.array_equal(out.astype(int), expected)


def test_train_pipeline_output_and_flip_rate(exemplar_file):
    path, _ = exemplar_file
    pipeline = Compose(exemplar_train_pipeline())
    np.random.seed(0)
    random.seed(0)
    flips, changed = 0, 0
    plain = Compose(exemplar_test_pipeline())(_exemplar_results(path))['img']
    for _ in range(400):
        results = pipeline(_exemplar_results(path))
        img = results['img']
        assert img.shape == (300, 300, 3) and img.dtype == np.uint8
        flips += bool(results['flip'])
        changed += not np.array_equal(img, plain)
    # Binomial(400, 0.5): mean 200, sd 10.
    assert 170 <= flips <= 230
    # unchanged only with no jitter, flip, warp, gray or blur: 0.7 * 0.5**3
    # * 0.6 = 5 % of draws
    assert 340 <= changed <= 395
