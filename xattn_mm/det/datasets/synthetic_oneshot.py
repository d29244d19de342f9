"""The embedded one-shot detection dataset: procedural shapes in COCO format.

Twelve classes, each one hue and one shape (hues 30 degrees apart, shapes
cycling square, disk, triangle). Every fourth is unseen: ``chartreuse
square``, ``azure disk`` and ``rose triangle`` -- their shapes occur among the
seen classes and their hues lie between seen hues, so a model can only find
them by comparing the target with the exemplar. Every image holds objects of
two or three different classes (one or two instances each) on a textured
background, so an image alone never says which objects to detect.

The files are ordinary COCO detection files read by mmdet's ``CocoDataset``;
:class:`OneShotDataset` with ``split='synthetic'`` applies the split.
"""

import colorsys
import json
import os
import os.path as osp
from typing import Dict, Iterable, List, Sequence, Tuple

import cv2
import numpy as np

SYNTHETIC_CLASSES = (
    'red square',
    'orange disk',
    'yellow triangle',
    'chartreuse square',
    'green disk',
    'spring triangle',
    'cyan square',
    'azure disk',
    'blue triangle',
    'violet square',
    'magenta disk',
    'rose triangle',
)
# Every fourth class, as the COCO one-shot splits choose theirs.
SYNTHETIC_UNSEEN = ('chartreuse square', 'azure disk', 'rose triangle')
_HUES = tuple(i / 12 for i in range(12))  # fraction of a turn, 30 degrees


def _draw_shape(
    img: np.ndarray, shape: str, box: Tuple[int, int, int], colour: list
) -> None:
    x, y, size = box
    if shape == 'square':
        cv2.rectangle(img, (x, y), (x + size - 1, y + size - 1), colour, -1)
    elif shape == 'disk':
        r = size / 2
        cv2.circle(
            img,
            (int(round(x + r - 0.5)), int(round(y + r - 0.5))),
            int(r),
            colour,
            -1,
            lineType=cv2.LINE_AA,
        )
    else:
        pts = np.array(
            [
                [x + size // 2, y],
                [x, y + size - 1],
                [x + size - 1, y + size - 1],
            ]
        )
        cv2.fillPoly(img, [pts], colour, lineType=cv2.LINE_AA)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A grey gradient with noise and a few thin grey lines."""
    ramp = np.linspace(0, 1, size)
    a, b, c = rng.uniform(20, 90, 3)
    grad = a + (b - a) * ramp[None, :] + (c - a) * ramp[:, None] / 2
    img = grad[..., None] + rng.normal(0, 8, (size, size, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 6))):
        p1 = tuple(int(v) for v in rng.integers(0, size, 2))
        p2 = tuple(int(v) for v in rng.integers(0, size, 2))
        grey = int(rng.integers(60, 160))
        cv2.line(img, p1, p2, (grey, grey, grey), int(rng.integers(1, 3)))
    return img


def _iou(a: Tuple[int, int, int], b: Tuple[int, int, int]) -> float:
    ax, ay, asz = a
    bx, by, bsz = b
    iw = max(0, min(ax + asz, bx + bsz) - max(ax, bx))
    ih = max(0, min(ay + asz, by + bsz) - max(ay, by))
    inter = iw * ih
    return inter / (asz * asz + bsz * bsz - inter)


def _make_image(
    rng: np.random.Generator, size: int, min_obj: int, max_obj: int
) -> Tuple[np.ndarray, List[Tuple[int, Tuple[int, int, int]]]]:
    img = _background(rng, size)
    labels = rng.choice(len(SYNTHETIC_CLASSES), rng.integers(2, 4), False)
    objects: List[Tuple[int, Tuple[int, int, int]]] = []
    for label in labels:
        for _ in range(int(rng.integers(1, 3))):
            for _attempt in range(20):
                side = int(rng.integers(min_obj, max_obj + 1))
                box = (
                    int(rng.integers(0, size - side + 1)),
                    int(rng.integers(0, size - side + 1)),
                    side,
                )
                if all(_iou(box, other) < 0.1 for _, other in objects):
                    objects.append((int(label), box))
                    break
    for label, box in objects:
        sat, val = rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0)
        r, g, b = colorsys.hsv_to_rgb(_HUES[label], sat, val)
        colour = [int(255 * b), int(255 * g), int(255 * r)]  # BGR
        shape = SYNTHETIC_CLASSES[label].split()[1]
        _draw_shape(img, shape, box, colour)
    return img, objects


def generate_synthetic_oneshot(
    root: str,
    num_train: int = 1200,
    num_val: int = 240,
    image_size: int = 128,
    object_size: Tuple[int, int] = (16, 40),
    seed: int = 0,
) -> Dict[str, str]:
    """Write the dataset under ``root``: ``images/{train,val}/*.png`` and
    ``annotations/instances_{train,val}.json`` (COCO format, category ids
    1..12 in :data:`SYNTHETIC_CLASSES` order). Reproducible for a given seed.

    Args:
        root (str): Output directory (created).
        num_train (int): Training images. Defaults to 1200.
        num_val (int): Validation images. Defaults to 240.
        image_size (int): Side of the square images. Defaults to 128.
        object_size (tuple[int, int]): Smallest and largest object side, in
            pixels. Defaults to (16, 40).
        seed (int): Random seed. Defaults to 0.

    Returns:
        dict[str, str]: The annotation file of each split.
    """
    lo, hi = object_size
    if not 4 <= lo <= hi <= image_size // 2:
        raise ValueError(
            f'object_size must satisfy 4 <= min <= max <= image_size / 2 '
            f'({image_size // 2}), got {object_size}.'
        )
    rng = np.random.default_rng(seed)
    ann_files = {}
    for split, count in (('train', num_train), ('val', num_val)):
        ann_files[split] = write_coco_split(
            root,
            split,
            (_make_image(rng, image_size, lo, hi) for _ in range(count)),
            SYNTHETIC_CLASSES,
        )
    return ann_files


def write_coco_split(
    root: str,
    split: str,
    images: Iterable[Tuple[np.ndarray, Sequence[Tuple[int, Sequence[int]]]]],
    classes: Sequence[str],
) -> str:
    """Write drawn images and their boxes as one COCO split:
    ``root/images/<split>/<id>.png`` and
    ``root/annotations/instances_<split>.json`` (image ids from 1, category
    ids 1..len(classes) in ``classes`` order).

    Args:
        root (str): Output directory (created).
        split (str): Name used in the paths, e.g. ``'train'``.
        images (Iterable): (BGR uint8 image (H, W, 3), objects) pairs, each
            object (class index, box): a square (x, y, side) or a box
            (x, y, w, h), in pixels.
        classes (Sequence[str]): Category names.

    Returns:
        str: Path of the annotation file.
    """
    img_dir = osp.join(root, 'images', split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    records, annotations = [], []
    for image_id, (img, objects) in enumerate(images, 1):
        file_name = f'{image_id:06d}.png'
        cv2.imwrite(osp.join(img_dir, file_name), img)
        height, width = img.shape[:2]
        records.append(
            dict(id=image_id, file_name=file_name, height=height, width=width)
        )
        for label, box in objects:
            x, y, w = box[:3]
            h = box[3] if len(box) > 3 else w
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=image_id,
                    category_id=int(label) + 1,
                    bbox=[x, y, w, h],
                    area=w * h,
                    iscrowd=0,
                )
            )
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(classes)]
    ann_file = osp.join(root, 'annotations', f'instances_{split}.json')
    with open(ann_file, 'w') as f:
        json.dump(
            dict(
                images=records, annotations=annotations, categories=categories
            ),
            f,
        )
    return ann_file
