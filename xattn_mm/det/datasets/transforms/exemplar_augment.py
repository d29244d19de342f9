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

The pipelines that reproduce it (``exemplar_train_pipeline`` and
``exemplar_test_pipeline`` of ``configs/_base_/datasets/oneshot_detection.py``,
which ``tests/test_det/test_exemplar_augment.py`` runs against PIL) are host
transforms but one: ``Resize`` with ``backend='pillow'`` (PIL's antialiased
bilinear resize, as torchvision's on a PIL image), mmcv's ``RandomApply``
around mmpretrain's ``ColorJitter`` (PIL's enhance operations and HSV hue
shift, in a random order, as torchvision's; ``HueWrapColorJitter``, its
subclass in ``xattn_mm.cls``, wraps negative hue shifts that mmcv's
``adjust_hue`` refuses under numpy 2), ``RandomFlip``, mmcv's
``RandomGrayscale`` with ITU-R 601-2 weights in BGR order (PIL's
``convert('L')``) and mmpretrain's ``GaussianBlur`` (PIL's, radius uniform in
[0.1, 2]). The one written here is :class:`RandomPerspective`: torchvision's
corner draw and PIL's bilinear warp, which no host transform reproduces.
"""

import numbers
from typing import List, Sequence, Union

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness
from mmdet.registry import TRANSFORMS

_INTERPOLATIONS = {'nearest': cv2.INTER_NEAREST, 'bilinear': cv2.INTER_LINEAR}


def _check_prob(prob: float) -> float:
    if not 0 <= prob <= 1:
        raise ValueError(f'prob must be in [0, 1], got {prob}.')
    return float(prob)


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
