from .exemplar_samplers import CoAEExemplarSampler, IADETRExemplarSampler
from .one_shot_dataset import OneShotDataset
from .one_shot_splits import coco_unseen_classes, one_shot_split
from .transforms import *  # noqa: F401,F403

__all__ = [
    'CoAEExemplarSampler',
    'IADETRExemplarSampler',
    'OneShotDataset',
    'coco_unseen_classes',
    'one_shot_split',
]
