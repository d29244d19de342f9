"""Transforms that replace host ones which fail under this stack."""

from typing import Dict

import mmcv
from mmpretrain.datasets.transforms import ColorJitter
from mmpretrain.registry import TRANSFORMS

from xattn_mm.compat.mmcv_numpy2 import adjust_hue


@TRANSFORMS.register_module()
class HueWrapColorJitter(ColorJitter):
    """mmpretrain's ``ColorJitter`` with a hue rotation that works under
    numpy 2.

    Same arguments, same random parameters (mmpretrain's ``_rand_params``)
    and order; only the hue step goes through
    :func:`xattn_mm.compat.mmcv_numpy2.adjust_hue`, because mmcv 2.1's
    ``adjust_hue`` raises ``OverflowError`` for a negative hue under numpy 2
    (about half the draws of ``hue=0.3``). Brightness, contrast and
    saturation are mmcv's.
    """

    def transform(self, results: Dict) -> Dict:
        img = results['img']
        order, brightness, contrast, saturation, hue = self._rand_params()
        for index in order:
            if index == 0 and brightness is not None:
                img = mmcv.adjust_brightness(
                    img, brightness, backend=self.backend
                )
            elif index == 1 and contrast is not None:
                img = mmcv.adjust_contrast(img, contrast, backend=self.backend)
            elif index == 2 and saturation is not None:
                img = mmcv.adjust_color(
                    img, alpha=saturation, backend=self.backend
                )
            elif index == 3 and hue is not None:
                img = adjust_hue(img, hue, backend=self.backend)
        results['img'] = img
        return results
