"""A toy detection dataset and image loader shared by the one-shot dataset
tests."""

import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.registry import DATASETS, TRANSFORMS
from mmengine.dataset import BaseDataset


@DATASETS.register_module(force=True)
class ToyDetection(BaseDataset):
    """Instances given as (label, ignore) lists per image, at
    ``{PREFIX}{i}.png``."""

    PREFIX = ''

    METAINFO = dict(classes=('a', 'b', 'c'))

    def __init__(self, images, **kwargs):
        self.images = images
        super().__init__(serialize_data=False, **kwargs)

    def load_data_list(self):
        return [
            dict(
                img_id=i,
                img_path=f'{self.PREFIX}{i}.png',
                instances=[
                    dict(
                        bbox=[j, j, j + 4, j + 4],
                        bbox_label=lab,
                        ignore_flag=ign,
                    )
                    for j, (lab, ign) in enumerate(insts)
                ],
            )
            for i, insts in enumerate(self.images)
        ]


@TRANSFORMS.register_module(force=True)
class ToyLoad(BaseTransform):
    """An 8 x 8 black image for any sample."""

    def transform(self, results):
        results['img'] = np.zeros((8, 8, 3), np.uint8)
        return results
