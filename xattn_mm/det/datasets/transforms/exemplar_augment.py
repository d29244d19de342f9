"""Exemplar augmentations of the IA-DETR one-shot protocol.

The official IA-DETR code (``get_query_transforms`` in its dataset mapper)
augments the exemplar crop, a PIL image, with torchvision::

    Resize((300, 300))
    RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.3)
    RandomHorizontalFlip(p=0.5)
    RandomPerspective(distortion_scale=0.5, p=0.5, interpolation=BILINEAR,
                      fill=0)
    RandomGrayscale(p=0.4)
    RandomApply([GaussianBlur([.1, 2.])], p=0.5)  # PIL blur, radius=sigma

and at test time only ``Resize((300, 300))``. The resize comes first, so the
perspective and blur magnitudes (in pixels) are those of a 300x300 image.

The mmcv-convention (HxWx3 uint8 BGR ``results['img']``) pipelines that
reproduce it are ``exemplar_train_pipeline`` and ``exemplar_test_pipeline``
of ``configs/_base_/datasets/oneshot_detection.py``
(``tests/test_det/test_exemplar_augment.py`` runs them).

``Resize``, ``RandomFlip`` and ``RandomGrayscale`` are the host (mmcv /
mmdet) transforms; ``backend='pillow'`` makes the resize PIL's antialiased
bilinear one, as torchvision's ``Resize`` on a PIL image is, and the
grayscale weights are ITU-R 601-2 luma in BGR order, as PIL's ``convert('L')``
(mmcv's ``RandomGrayscale`` draws from Python's ``random``, which mmengine
seeds too). The three transforms below draw from ``np.random``.
"""

import numbers
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness
from mmdet.registry import TRANSFORMS

# ITU-R 601-2 luma (PIL's convert('L')), in BGR order.
_LUMA_BGR = np.array([0.114, 0.587, 0.299], dtype=np.float32)

_INTERPOLATIONS = {'nearest': cv2.INTER_NEAREST, 'bilinear': cv2.INTER_LINEAR}

Range = Union[float, Sequence[float]]


def _luma(img: np.ndarray) -> np.ndarray:
    """(H, W) luma of a float (H, W, 3) BGR image."""
    return img @ _LUMA_BGR


def _shift_hue(img: np.ndarray, hue: float) -> np.ndarray:
    """Rotate the hue of a float BGR image in [0, 255] by ``hue`` turns."""
    hsv = cv2.cvtColor(img / np.float32(255), cv2.COLOR_BGR2HSV)
    # float HSV: H in degrees [0, 360), S and V in [0, 1]
    hsv[..., 0] = np.mod(hsv[..., 0] + np.float32(360 * hue), 360)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR) * np.float32(255)


def adjust_color_jitter(
    img: np.ndarray,
    brightness: float = 1.0,
    contrast: float = 1.0,
    saturation: float = 1.0,
    hue: float = 0.0,
    order: Sequence[int] = (0, 1, 2, 3),
) -> np.ndarray:
    """Apply torchvision's four colour-jitter operations with given factors.

    In ``order`` (0 brightness, 1 contrast, 2 saturation, 3 hue), with the
    formulas of torchvision's ``adjust_*`` functions on a BGR image: the
    brightness blends with black (``x * f``), the contrast with the mean luma
    of the image, the saturation with each pixel's luma, and the hue rotates
    the H channel of HSV by ``hue`` of a full turn. Values are clipped to
    [0, 255] after each operation; the arithmetic is float32 and the result
    is rounded once at the end, so it may differ from torchvision's (which
    truncates to uint8 after each operation) by a grey level or two.

    Args:
        img (np.ndarray): (H, W, 3) uint8 BGR image.
        brightness (float): Brightness factor (1 keeps the image).
            Defaults to 1.0.
        contrast (float): Contrast factor (1 keeps the image).
            Defaults to 1.0.
        saturation (float): Saturation factor (1 keeps the image).
            Defaults to 1.0.
        hue (float): Hue shift, in turns (any value; 0 and whole numbers
            keep the hue). Defaults to 0.0.
        order (Sequence[int]): Operations to apply, in order; an index left
            out is not applied. Defaults to (0, 1, 2, 3).

    Returns:
        np.ndarray: The jittered image, of the input's shape and dtype.
    """
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(
            f'colour jitter needs an (H, W, 3) image, got shape {img.shape}.'
        )
    out = img.astype(np.float32)
    for index in order:
        if index == 0 and brightness != 1:
            out = out * np.float32(brightness)
        elif index == 1 and contrast != 1:
            mean = _luma(out).mean(dtype=np.float64)
            out = out * np.float32(contrast) + np.float32(
                (1 - contrast) * mean
            )
        elif index == 2 and saturation != 1:
            gray = _luma(out)[..., None]
            out = out * np.float32(saturation) + gray * np.float32(
                1 - saturation
            )
        elif index == 3 and hue != 0:
            out = _shift_hue(out, hue)
        else:
            continue
        np.clip(out, 0, 255, out=out)
    return np.rint(out).astype(img.dtype)


def _factor_range(
    value: Range, name: str, center: float, bound: Tuple[float, float]
) -> Optional[Tuple[float, float]]:
    """torchvision's ``ColorJitter._check_input``: None when no jitter."""
    if isinstance(value, numbers.Number):
        if value < 0:
            raise ValueError(f'{name} must be non-negative, got {value}.')
        low, high = center - float(value), center + float(value)
        if center == 1:
            low = max(low, 0.0)
    elif isinstance(value, Sequence) and len(value) == 2:
        low, high = float(value[0]), float(value[1])
    else:
        raise TypeError(f'{name} must be a number or a (min, max) pair.')
    if not bound[0] <= low <= high <= bound[1]:
        raise ValueError(f'{name} range {(low, high)} is not in {bound}.')
    if low == high == center:
        return None
    return low, high


def _check_prob(prob: float) -> float:
    if not 0 <= prob <= 1:
        raise ValueError(f'prob must be in [0, 1], got {prob}.')
    return float(prob)


@TRANSFORMS.register_module()
class ExemplarColorJitter(BaseTransform):
    """torchvision's ``ColorJitter``, applied with probability ``prob``.

    With probability ``prob`` (torchvision ``RandomApply([ColorJitter(...)],
    p=prob)``): a brightness, contrast and saturation factor drawn uniformly
    from ``[max(0, 1 - v), 1 + v]`` (or the given ``[min, max]``) and a hue
    shift from ``[-hue, hue]`` turns, applied in a random order by
    :func:`adjust_color_jitter`.

    Required keys: ``img`` ((H, W, 3) uint8 BGR). Modified keys: ``img``.

    Args:
        brightness (float | Sequence[float]): Brightness jitter.
            Defaults to 0.
        contrast (float | Sequence[float]): Contrast jitter. Defaults to 0.
        saturation (float | Sequence[float]): Saturation jitter.
            Defaults to 0.
        hue (float | Sequence[float]): Hue jitter in turns, ``0 <= hue <=
            0.5`` or a pair in [-0.5, 0.5]. Defaults to 0.
        prob (float): Probability of jittering. Defaults to 1.0.
    """

    def __init__(
        self,
        brightness: Range = 0.0,
        contrast: Range = 0.0,
        saturation: Range = 0.0,
        hue: Range = 0.0,
        prob: float = 1.0,
    ) -> None:
        unbounded = (0.0, float('inf'))
        self.brightness = _factor_range(brightness, 'brightness', 1, unbounded)
        self.contrast = _factor_range(contrast, 'contrast', 1, unbounded)
        self.saturation = _factor_range(saturation, 'saturation', 1, unbounded)
        self.hue = _factor_range(hue, 'hue', 0, (-0.5, 0.5))
        self.prob = _check_prob(prob)

    @cache_randomness
    def _random_apply(self) -> bool:
        return np.random.rand() < self.prob

    @cache_randomness
    def _random_params(self) -> dict:
        params = dict(order=tuple(np.random.permutation(4).tolist()))
        for name in ('brightness', 'contrast', 'saturation', 'hue'):
            value_range = getattr(self, name)
            if value_range is not None:
                params[name] = np.random.uniform(*value_range)
        return params

    def transform(self, results: dict) -> dict:
        if self._random_apply():
            results['img'] = adjust_color_jitter(
                results['img'], **self._random_params()
            )
        return results

    def __repr__(self) -> str:
        return (
            f'{self.__class__.__name__}(brightness={self.brightness}, '
            f'contrast={self.contrast}, saturation={self.saturation}, '
            f'hue={self.hue}, prob={self.prob})'
        )


def warp_perspective(
    img: np.ndarray,
    endpoints: Sequence[Sequence[float]],
    interpolation: str = 'bilinear',
    fill: Union[float, Sequence[float]] = 0,
) -> np.ndarray:
    """Warp the image corners onto ``endpoints``, as torchvision's
    ``F.perspective(img, startpoints, endpoints)`` does with ``startpoints``
    the corners ``[[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]``.

    The points are in torchvision's (and PIL's) continuous coordinates, in
    which pixel ``i`` covers ``[i, i + 1)``; pixels that map from outside the
    image are ``fill`` (bilinear sampling blends them in at the border).

    Args:
        img (np.ndarray): (H, W) or (H, W, C) image, C <= 4.
        endpoints (Sequence[Sequence[float]]): Where the top-left, top-right,
            bottom-right and bottom-left corners go, as (x, y).
        interpolation (str): 'bilinear' or 'nearest'. Defaults to
            'bilinear'.
        fill (float | Sequence[float]): Value of the pixels outside the
            image, one per channel or one for all. Defaults to 0.

    Returns:
        np.ndarray: The warped image, of the input's shape and dtype.
    """
    h, w = img.shape[:2]
    start = np.array(
        [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float32
    )
    end = np.asarray(endpoints, dtype=np.float32).reshape(4, 2)
    matrix = cv2.getPerspectiveTransform(start, end).astype(np.float64)
    # OpenCV puts pixel centres at integers: shift into, and out of, the
    # continuous frame.
    to_continuous = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    to_centres = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
    matrix = to_centres @ matrix @ to_continuous
    if isinstance(fill, numbers.Number):
        border = (float(fill),) * 4
    else:
        border = tuple(float(v) for v in fill)
    out = cv2.warpPerspective(
        np.ascontiguousarray(img),
        matrix,
        (w, h),
        flags=_INTERPOLATIONS[interpolation],
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=border,
    )
    return out.reshape(img.shape)


@TRANSFORMS.register_module()
class RandomPerspective(BaseTransform):
    """torchvision's ``RandomPerspective``.

    With probability ``prob``, each corner moves inward by a random whole
    number of pixels, up to ``int(distortion_scale * (w // 2))``
    horizontally and ``int(distortion_scale * (h // 2))`` vertically (drawn
    as torchvision's ``RandomPerspective.get_params`` draws them), and the
    image is warped accordingly by :func:`warp_perspective`, keeping its
    size. Only the image is warped (no boxes or masks).

    Required keys: ``img``. Modified keys: ``img``.

    Args:
        distortion_scale (float): Largest corner move, as a fraction of half
            the side, in [0, 1]. Defaults to 0.5.
        prob (float): Probability of warping. Defaults to 0.5.
        interpolation (str): 'bilinear' or 'nearest'. Defaults to
            'bilinear'.
        fill (float | Sequence[float]): Value of the uncovered pixels.
            Defaults to 0.
    """

    def __init__(
        self,
        distortion_scale: float = 0.5,
        prob: float = 0.5,
        interpolation: str = 'bilinear',
        fill: Union[float, Sequence[float]] = 0,
    ) -> None:
        if not 0 <= distortion_scale <= 1:
            raise ValueError(
                f'distortion_scale must be in [0, 1], got {distortion_scale}.'
            )
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f'interpolation must be one of {sorted(_INTERPOLATIONS)}, '
                f'got {interpolation!r}.'
            )
        self.distortion_scale = float(distortion_scale)
        self.prob = _check_prob(prob)
        self.interpolation = interpolation
        self.fill = fill

    @cache_randomness
    def _random_apply(self) -> bool:
        return np.random.rand() < self.prob

    @cache_randomness
    def _random_endpoints(self, w: int, h: int) -> List[List[int]]:
        dx = int(self.distortion_scale * (w // 2))
        dy = int(self.distortion_scale * (h // 2))

        def left() -> int:
            return int(np.random.randint(0, dx + 1))

        def right() -> int:
            return int(np.random.randint(w - dx - 1, w))

        def top() -> int:
            return int(np.random.randint(0, dy + 1))

        def bottom() -> int:
            return int(np.random.randint(h - dy - 1, h))

        # torchvision's draw order: tl (x, y), tr, br, bl
        top_left = [left(), top()]
        top_right = [right(), top()]
        bottom_right = [right(), bottom()]
        bottom_left = [left(), bottom()]
        return [top_left, top_right, bottom_right, bottom_left]

    def transform(self, results: dict) -> dict:
        if self._random_apply():
            img = results['img']
            h, w = img.shape[:2]
            endpoints = self._random_endpoints(w, h)
            results['img'] = warp_perspective(
                img, endpoints, self.interpolation, self.fill
            )
        return results

    def __repr__(self) -> str:
        return (
            f'{self.__class__.__name__}('
            f'distortion_scale={self.distortion_scale}, prob={self.prob}, '
            f'interpolation={self.interpolation!r}, fill={self.fill})'
        )


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` pixels.

    ``cv2.GaussianBlur`` with the kernel size derived from ``sigma`` (for
    uint8 images OpenCV takes ``round(6 * sigma + 1) | 1`` taps, +-3 sigma)
    and the border pixels replicated, as PIL's ``GaussianBlur(radius=sigma)``
    (a three-pass box blur with standard deviation ``sigma``) replicates
    them.

    Args:
        img (np.ndarray): (H, W) or (H, W, C) image.
        sigma (float): Standard deviation in pixels, > 0.

    Returns:
        np.ndarray: The blurred image, of the input's shape and dtype.
    """
    out = cv2.GaussianBlur(
        np.ascontiguousarray(img),
        (0, 0),
        sigmaX=sigma,
        sigmaY=sigma,
        borderType=cv2.BORDER_REPLICATE,
    )
    return out.reshape(img.shape)


@TRANSFORMS.register_module()
class RandomGaussianBlur(BaseTransform):
    """SimCLR / MoCo-v2 Gaussian blur with a random sigma, as IA-DETR uses.

    With probability ``prob``, blur by :func:`gaussian_blur` with sigma
    drawn uniformly from ``sigma``. The official code blurs with PIL's
    ``ImageFilter.GaussianBlur(radius=sigma)`` (``radius`` is PIL's standard
    deviation), not with ``torchvision.transforms.GaussianBlur``, so there
    is no fixed kernel size: it is derived from sigma.

    Required keys: ``img``. Modified keys: ``img``.

    Args:
        sigma (float | Sequence[float]): Standard deviation in pixels, or a
            (min, max) range to draw it from. Defaults to (0.1, 2.0).
        prob (float): Probability of blurring. Defaults to 0.5.
    """

    def __init__(self, sigma: Range = (0.1, 2.0), prob: float = 0.5) -> None:
        if isinstance(sigma, numbers.Number):
            sigma = (sigma, sigma)
        if len(sigma) != 2 or not 0 < sigma[0] <= sigma[1]:
            raise ValueError(
                f'sigma must be > 0 or a (min, max) range with 0 < min <= '
                f'max, got {sigma}.'
            )
        self.sigma = (float(sigma[0]), float(sigma[1]))
        self.prob = _check_prob(prob)

    @cache_randomness
    def _random_apply(self) -> bool:
        return np.random.rand() < self.prob

    @cache_randomness
    def _random_sigma(self) -> float:
        return float(np.random.uniform(*self.sigma))

    def transform(self, results: dict) -> dict:
        if self._random_apply():
            results['img'] = gaussian_blur(
                results['img'], self._random_sigma()
            )
        return results

    def __repr__(self) -> str:
        return (
            f'{self.__class__.__name__}(sigma={self.sigma}, prob={self.prob})'
        )
