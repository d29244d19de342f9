"""Seen / unseen class splits of the one-shot detection protocols (CoAE,
NeurIPS 2019; followed by AIT and BHRL, CVPR 2022).
"""

from typing import Sequence, Tuple

from mmdet.datasets import CocoDataset, VOCDataset

from .synthetic_oneshot import SYNTHETIC_CLASSES, SYNTHETIC_UNSEEN

VOC_UNSEEN = ('aeroplane', 'cat', 'cow', 'sheep')
SPLITS = ('voc', 'coco1', 'coco2', 'coco3', 'coco4', 'synthetic')


def coco_unseen_classes(split: int) -> Tuple[str, ...]:
    """COCO one-shot split ``split`` (1..4): the 80 categories indexed 1..80
    in the standard order; index i is unseen when i % 4 == split % 4."""
    if split not in (1, 2, 3, 4):
        raise ValueError(f'COCO one-shot split must be 1..4, got {split!r}.')
    classes = CocoDataset.METAINFO['classes']
    return tuple(c for i, c in enumerate(classes, 1) if i % 4 == split % 4)


def one_shot_split(
    split: str, classes: Sequence[str]
) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(seen, unseen) class names of a named split, in ``classes`` order.

    Args:
        split (str): ``'voc'`` (unseen: aeroplane, cat, cow, sheep) or
            ``'coco1'`` .. ``'coco4'``, or ``'synthetic'`` (the embedded
            dataset, unseen: chartreuse square, azure disk, rose triangle).
        classes (Sequence[str]): The dataset's classes; every unseen class of
            the split must be among them.

    Returns:
        tuple: Seen and unseen class names.
    """
    if split == 'voc':
        unseen = VOC_UNSEEN
        expected = VOCDataset.METAINFO['classes']
    elif split == 'synthetic':
        unseen = SYNTHETIC_UNSEEN
        expected = SYNTHETIC_CLASSES
    elif split in SPLITS:
        unseen = coco_unseen_classes(int(split[-1]))
        expected = CocoDataset.METAINFO['classes']
    else:
        raise ValueError(f'split must be one of {SPLITS}, got {split!r}.')
    if tuple(classes) != tuple(expected):
        raise ValueError(
            f'split {split!r} is defined on the standard '
            f'{len(expected)} classes in their standard order; the dataset '
            f'has {len(classes)} classes starting {tuple(classes)[:3]}.'
        )
    seen = tuple(c for c in classes if c not in unseen)
    return seen, tuple(c for c in classes if c in unseen)
