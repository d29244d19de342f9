"""mmcv 2.1's ``adjust_hue`` for a negative hue under numpy 2.

``mmcv.adjust_hue`` rotates the hue channel with ``h += np.uint8(hue_factor *
255)``, relying on numpy 1 wrapping a negative value into uint8. numpy 2
raises ``OverflowError`` instead, so mmpretrain's ``ColorJitter`` with any
``hue`` > 0 crashes about half the time (DomainBed's augmentation uses hue
0.3). mmcv 2.1.0 is the last release mmdet 3.3 and mmseg 1.2 accept, so the
fix lives here: :func:`adjust_hue` is the same rotation by
``int(hue_factor * 255)`` steps of the 256-step hue circle, computed modulo
256. mmcv is left as it is; the registered transform
:class:`xattn_mm.cls.datasets.HueWrapColorJitter` (mmpretrain's
``ColorJitter`` through this function) is what the configs use.
"""

from typing import Optional

import cv2
import mmcv
import mmcv.image
import numpy as np


def adjust_hue(
    img: np.ndarray, hue_factor: float, backend: Optional[str] = None
) -> np.ndarray:
    """Rotate the hue of a BGR image, as :func:`mmcv.adjust_hue` means to.

    Args:
        img (np.ndarray): BGR image, (H, W, 3) or (H, W).
        hue_factor (float): Rotation in [-0.5, 0.5] of a full turn.
        backend (str, optional): ``'cv2'`` or ``'pillow'``. Defaults to
            mmcv's ``imread_backend``.

    Returns:
        np.ndarray: The image, same dtype.
    """
    if backend is None:
        backend = mmcv.image.io.imread_backend
    if backend not in ('cv2', 'pillow'):
        raise ValueError(
            f"backend must be 'cv2' or 'pillow', got {backend!r}."
        )
    if not -0.5 <= hue_factor <= 0.5:
        raise ValueError(f'hue_factor {hue_factor} is not in [-0.5, 0.5].')
    if not (isinstance(img, np.ndarray) and img.ndim in (2, 3)):
        raise TypeError('img should be an ndarray with 2 or 3 dimensions.')
    shift = np.uint8(int(hue_factor * 255) % 256)
    if backend == 'pillow':
        from PIL import Image

        if img.dtype != np.uint8:
            raise TypeError('The pillow backend needs a uint8 image.')
        pil = Image.fromarray(img[..., ::-1], mode='RGB')
        h, s, v = pil.convert('HSV').split()
        hue = np.array(h, dtype=np.uint8)
        hue += shift  # uint8 addition wraps around the hue circle
        hsv = Image.merge('HSV', (Image.fromarray(hue, 'L'), s, v))
        return np.array(hsv.convert('RGB'), dtype=img.dtype)[..., ::-1]
    dtype = img.dtype
    hsv = cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_BGR2HSV_FULL)
    hsv[..., 0] += shift
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR_FULL).astype(dtype)
