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

import xattn_mm.cls  # noqa: F401  (HueWrapColorJitter)
import xattn_mm.det  # noqa: F401
from xattn_mm.det.datasets.transforms import warp_perspective

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


# --- colour jitter (mmpretrain's, inside mmcv's RandomApply) --------------


def _configured(name):
    """The shipped exemplar pipeline's transform whose type ends in
    ``name`` (looking inside RandomApply)."""
    for t in exemplar_train_pipeline():
        if t['type'] == 'RandomApply':
            t = t['transforms'][0]
        if t['type'].endswith(name):
            return t
    raise AssertionError(f'no {name} in the exemplar pipeline')


def _pil_hue(img, hue):
    """torchvision's adjust_hue on a PIL image (the official path)."""
    h, s, v = _pil(img).convert('HSV').split()
    shifted = (np.array(h, dtype=int) + int(hue * 255)) % 256
    h = Image.fromarray(shifted.astype(np.uint8), 'L')
    return _from_pil(Image.merge('HSV', (h, s, v)).convert('RGB'))


@pytest.mark.parametrize(
    'enhance, name',
    [
        (ImageEnhance.Brightness, 'brightness'),
        (ImageEnhance.Contrast, 'contrast'),
        (ImageEnhance.Color, 'saturation'),
        (None, 'hue'),
    ],
)
@pytest.mark.parametrize('factor', [0.6, 1.37, -0.07, 0.09])
def test_configured_jitter_is_torchvision_on_pil(enhance, name, factor):
    # The official code runs torchvision's ColorJitter on PIL images; the
    # configured mmpretrain transform reproduces each operation exactly,
    # negative hue shifts included (HueWrapColorJitter).
    if (name == 'hue') != (abs(factor) < 0.5):
        return
    img = _image(1)
    cfg = dict(_configured('ColorJitter'), **{name: (factor, factor)})
    for other in {'brightness', 'contrast', 'saturation', 'hue'} - {name}:
        cfg[other] = 0.0
    got = _run(cfg, img).astype(int)
    if name == 'hue':
        expected = _pil_hue(img, factor)
    else:
        expected = _from_pil(enhance(_pil(img)).enhance(factor))
    assert np.array_equal(got, expected)


def test_configured_jitter_draws_torchvision_ranges_at_p_0_3():
    outer = next(
        t for t in exemplar_train_pipeline() if t['type'] == 'RandomApply'
    )
    assert outer['prob'] == 0.3
    jitter = TRANSFORMS.build(outer['transforms'][0])
    assert (jitter.brightness, jitter.contrast, jitter.saturation) == (
        (0.6, 1.4),
    ) * 3
    assert jitter.hue == (-0.1, 0.1)
    np.random.seed(0)
    orders = {tuple(jitter._rand_params()[0]) for _ in range(200)}
    assert len(orders) > 12  # a random order of the four, as torchvision


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


# --- blur (mmpretrain's GaussianBlur, PIL's) -------------------------------


def test_configured_blur_is_pil_with_radius_uniform_in_0_1_to_2():
    img = _image(8)
    cfg = _configured('GaussianBlur')
    assert cfg['prob'] == 0.5
    fixed = dict(cfg, radius=1.5, prob=1.0, magnitude_range=None)
    expected = _from_pil(_pil(img).filter(ImageFilter.GaussianBlur(1.5)))
    assert np.array_equal(_run(fixed, img).astype(int), expected)
    blur = TRANSFORMS.build(cfg)
    np.random.seed(0)
    radii = np.array([blur.random_magnitude() for _ in range(4000)])
    assert 0.1 <= radii.min() < 0.15 and 1.95 < radii.max() <= 2.0
    assert abs(radii.mean() - 1.05) < 0.03


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
