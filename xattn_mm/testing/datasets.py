"""Tiny procedural datasets in the hosts' standard on-disk layouts.

Each builder draws coloured shapes with OpenCV onto noisy backgrounds, seeded,
so a run is reproducible and nothing is downloaded.
"""

import os
import os.path as osp
from typing import Dict, Sequence

import cv2
import numpy as np

from xattn_mm.det.datasets.synthetic_oneshot import write_coco_split

# One BGR colour per class index.
_PALETTE = np.array(
    [
        [220, 40, 40],
        [40, 200, 40],
        [40, 40, 220],
        [200, 200, 40],
        [200, 40, 200],
        [40, 200, 200],
    ],
    dtype=np.uint8,
)


def _background(
    rng: np.random.Generator, height: int, width: int
) -> np.ndarray:
    return rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)


def _check_classes(classes: Sequence[str]) -> None:
    if not 1 <= len(classes) <= len(_PALETTE):
        raise ValueError(
            f'classes must name 1 to {len(_PALETTE)} classes, '
            f'got {len(classes)}.'
        )


def make_coco_detection(
    root: str,
    classes: Sequence[str] = ('square', 'disk'),
    num_images: int = 4,
    image_size: tuple = (64, 80),
    max_objects: int = 3,
    seed: int = 0,
    split: str = 'train',
) -> str:
    """Write a COCO-format detection set: ``root/images/<split>/*.png`` and
    ``root/annotations/instances_<split>.json``.

    Class ``i`` is a filled shape of colour ``i`` (squares for even ``i``,
    disks for odd ``i``); every image holds 1 to ``max_objects`` objects.

    Args:
        root (str): Output directory.
        classes (Sequence[str]): Category names, ids 1..len(classes).
            Defaults to ('square', 'disk').
        num_images (int): Number of images. Defaults to 4.
        image_size (tuple): (height, width). Defaults to (64, 80).
        max_objects (int): Most objects per image. Defaults to 3.
        seed (int): Random seed. Defaults to 0.
        split (str): Name used in the paths. Defaults to 'train'.

    Returns:
        str: Path of the annotation file.
    """
    _check_classes(classes)
    rng = np.random.default_rng(seed)
    height, width = image_size

    def draw():
        img = _background(rng, height, width)
        objects = []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            label = int(rng.integers(len(classes)))
            size = int(
                rng.integers(min(height, width) // 5, min(height, width) // 2)
            )
            x = int(rng.integers(0, width - size))
            y = int(rng.integers(0, height - size))
            colour = _PALETTE[label].tolist()
            if label % 2 == 0:
                cv2.rectangle(
                    img, (x, y), (x + size - 1, y + size - 1), colour, -1
                )
            else:
                cv2.circle(
                    img, (x + size // 2, y + size // 2), size // 2, colour, -1
                )
            objects.append((label, (x, y, size)))
        return img, objects

    return write_coco_split(
        root, split, (draw() for _ in range(num_images)), classes
    )


def make_classification_folder(
    root: str,
    classes: Sequence[str] = ('red', 'green'),
    images_per_class: int = 4,
    image_size: int = 32,
    seed: int = 0,
) -> str:
    """Write ``root/<class>/<n>.png`` (mmpretrain ``CustomDataset`` layout);
    class ``i`` is a square of colour ``i``.

    Args:
        root (str): Output directory.
        classes (Sequence[str]): Class folder names. Defaults to
            ('red', 'green').
        images_per_class (int): Images per class. Defaults to 4.
        image_size (int): Side of the square images. Defaults to 32.
        seed (int): Random seed. Defaults to 0.

    Returns:
        str: ``root``.
    """
    _check_classes(classes)
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        os.makedirs(osp.join(root, name), exist_ok=True)
        for n in range(images_per_class):
            img = _background(rng, image_size, image_size)
            lo = int(rng.integers(0, image_size // 3))
            hi = image_size - 1 - int(rng.integers(0, image_size // 3))
            cv2.rectangle(
                img, (lo, lo), (hi, hi), _PALETTE[label].tolist(), -1
            )
            cv2.imwrite(osp.join(root, name, f'{n}.png'), img)
    return root


def make_segmentation_folder(
    root: str,
    num_classes: int = 2,
    num_images: int = 4,
    image_size: tuple = (32, 48),
    seed: int = 0,
) -> str:
    """Write ``root/img_dir/<n>.png`` and ``root/ann_dir/<n>.png`` (mmseg
    ``BaseSegDataset`` layout, labels 0..num_classes-1; label 0 is the
    background, every other label one coloured rectangle).

    Args:
        root (str): Output directory.
        num_classes (int): Number of classes including background.
            Defaults to 2.
        num_images (int): Number of images. Defaults to 4.
        image_size (tuple): (height, width). Defaults to (32, 48).
        seed (int): Random seed. Defaults to 0.

    Returns:
        str: ``root``.
    """
    if not 2 <= num_classes <= len(_PALETTE):
        raise ValueError(
            f'num_classes must be in [2, {len(_PALETTE)}], got {num_classes}.'
        )
    rng = np.random.default_rng(seed)
    height, width = image_size
    for sub in ('img_dir', 'ann_dir'):
        os.makedirs(osp.join(root, sub), exist_ok=True)
    for n in range(num_images):
        img = _background(rng, height, width)
        mask = np.zeros((height, width), dtype=np.uint8)
        for label in range(1, num_classes):
            y0, x0 = (
                int(rng.integers(0, height // 2)),
                int(rng.integers(0, width // 2)),
            )
            y1, x1 = (
                int(rng.integers(y0 + 2, height)),
                int(rng.integers(x0 + 2, width)),
            )
            img[y0:y1, x0:x1] = _PALETTE[label]
            mask[y0:y1, x0:x1] = label
        cv2.imwrite(osp.join(root, 'img_dir', f'{n}.png'), img)
        cv2.imwrite(osp.join(root, 'ann_dir', f'{n}.png'), mask)
    return root


# Per-domain style: (foreground colour, background intensity range, outline
# only). The class is the shape, so the same classes look different in every
# domain.
_DOMAIN_STYLES = (
    ((230, 230, 230), (0, 40), False),
    ((30, 30, 30), (200, 255), False),
    ((60, 200, 230), (60, 110), True),
    ((230, 120, 40), (0, 255), False),
    ((60, 110, 210), (10, 70), False),
)
_SHAPES = ('square', 'disk', 'triangle', 'bar')


def _draw_shape(img: np.ndarray, shape: str, colour, outline: bool, rng):
    size = img.shape[0]
    lo = int(rng.integers(1, size // 4))
    hi = size - 1 - int(rng.integers(1, size // 4))
    thickness = 2 if outline else -1
    colour = tuple(int(c) for c in colour)
    if shape == 'square':
        cv2.rectangle(img, (lo, lo), (hi, hi), colour, thickness)
    elif shape == 'disk':
        cv2.circle(
            img, (size // 2, size // 2), (hi - lo) // 2, colour, thickness
        )
    elif shape == 'triangle':
        pts = np.array([[size // 2, lo], [lo, hi], [hi, hi]], np.int32)
        if outline:
            cv2.polylines(img, [pts], True, colour, 2)
        else:
            cv2.fillPoly(img, [pts], colour)
    else:
        mid = size // 2
        cv2.rectangle(img, (lo, mid - 3), (hi, mid + 3), colour, thickness)


def make_multi_domain_folder(
    root: str,
    domains: Sequence[str] = ('photo', 'sketch', 'cartoon'),
    classes: Sequence[str] = ('square', 'disk', 'triangle'),
    images_per_class: int = 6,
    image_size: int = 32,
    seed: int = 0,
) -> str:
    """Write ``root/<domain>/<class>/<n>.png`` (DomainBed layout): class
    ``i`` is a shape, domain ``d`` a drawing style (colours, background,
    filled or outlined), so the domains share classes but not appearance.

    Args:
        root (str): Output directory.
        domains (Sequence[str]): Domain folder names (at most 5).
        classes (Sequence[str]): Class folder names (at most 4).
        images_per_class (int): Images per class and domain. Defaults to 6.
        image_size (int): Side of the square images. Defaults to 32.
        seed (int): Random seed. Defaults to 0.

    Returns:
        str: ``root``.
    """
    if not 1 <= len(domains) <= len(_DOMAIN_STYLES):
        raise ValueError(
            f'domains must name 1 to {len(_DOMAIN_STYLES)} domains, got '
            f'{domains}.'
        )
    if not 1 <= len(classes) <= len(_SHAPES):
        raise ValueError(f'classes must name 1 to 4 classes, got {classes}.')
    rng = np.random.default_rng(seed)
    for (colour, (bg_lo, bg_hi), outline), domain in zip(
        _DOMAIN_STYLES, domains
    ):
        for shape, name in zip(_SHAPES, classes):
            folder = osp.join(root, domain, name)
            os.makedirs(folder, exist_ok=True)
            for n in range(images_per_class):
                img = rng.integers(
                    bg_lo, bg_hi + 1, size=(image_size, image_size, 3)
                ).astype(np.uint8)
                _draw_shape(img, shape, colour, outline, rng)
                cv2.imwrite(osp.join(folder, f'{n}.png'), img)
    return root


def crop_coco_objects(
    ann_file: str,
    img_dir: str,
    out_dir: str,
    classes: Sequence[str],
    min_size: int = 24,
) -> Dict[str, int]:
    """Cut the non-crowd boxes of ``classes`` out of a COCO-format set into
    ``out_dir/<class>/<ann id>.jpg`` (mmpretrain ``CustomDataset`` layout):
    classification data made of real object crops.

    Args:
        ann_file (str): COCO annotation json.
        img_dir (str): Folder of its images.
        out_dir (str): Output folder.
        classes (Sequence[str]): COCO category names to keep.
        min_size (int): Smallest box side kept, in pixels. Defaults to 24.

    Returns:
        dict[str, int]: Crops written per class.
    """
    from pycocotools.coco import COCO

    coco = COCO(ann_file)
    by_name = {c['name']: c['id'] for c in coco.loadCats(coco.getCatIds())}
    missing = [c for c in classes if c not in by_name]
    if missing:
        raise ValueError(f'{ann_file} has no categories {missing}.')
    counts = {}
    for name in classes:
        folder = osp.join(out_dir, name)
        os.makedirs(folder, exist_ok=True)
        counts[name] = 0
        ann_ids = coco.getAnnIds(catIds=[by_name[name]], iscrowd=False)
        for ann in coco.loadAnns(ann_ids):
            x, y, w, h = (int(round(v)) for v in ann['bbox'])
            if min(w, h) < min_size:
                continue
            info = coco.loadImgs(ann['image_id'])[0]
            img = cv2.imread(osp.join(img_dir, info['file_name']))
            crop = img[max(y, 0) : y + h, max(x, 0) : x + w]
            cv2.imwrite(osp.join(folder, f'{ann["id"]}.jpg'), crop)
            counts[name] += 1
    return counts


def write_image_list(
    root: str, folder: str, out_file: str, classes: Sequence[str]
) -> int:
    """Write a CDTrans-style list file for ``root/folder/<class>/*``: one
    ``./folder/<class>/<file> <label>`` line per image, labels in the order
    of ``classes``, paths relative to ``root``.

    Args:
        root (str): Folder the paths are relative to.
        folder (str): Sub-folder holding one folder per class.
        out_file (str): The list file to write.
        classes (Sequence[str]): Class folder names, in label order.

    Returns:
        int: Lines written.
    """
    lines = []
    for label, name in enumerate(classes):
        class_dir = osp.join(root, folder, name)
        if not osp.isdir(class_dir):
            raise FileNotFoundError(f'No class folder {class_dir}.')
        for file in sorted(os.listdir(class_dir)):
            lines.append(f'./{folder}/{name}/{file} {label}\n')
    with open(out_file, 'w') as f:
        f.writelines(lines)
    return len(lines)


def crop_voc_objects(
    voc_root: str,
    out_dir: str,
    classes: Sequence[str],
    min_size: int = 24,
) -> Dict[str, int]:
    """Cut the non-difficult boxes of ``classes`` out of a VOC year folder
    (``Annotations/*.xml`` + ``JPEGImages``) into
    ``out_dir/<class>/<image>_<n>.jpg``.

    Args:
        voc_root (str): e.g. ``VOCdevkit/VOC2007``.
        out_dir (str): Output folder.
        classes (Sequence[str]): VOC class names to keep.
        min_size (int): Smallest box side kept, in pixels. Defaults to 24.

    Returns:
        dict[str, int]: Crops written per class.
    """
    import xml.etree.ElementTree as ET

    counts = {name: 0 for name in classes}
    for name in classes:
        os.makedirs(osp.join(out_dir, name), exist_ok=True)
    ann_dir = osp.join(voc_root, 'Annotations')
    for xml_file in sorted(os.listdir(ann_dir)):
        stem = osp.splitext(xml_file)[0]
        tree = ET.parse(osp.join(ann_dir, xml_file))
        img = None
        for n, obj in enumerate(tree.findall('object')):
            name = obj.findtext('name')
            if name not in counts or obj.findtext('difficult') == '1':
                continue
            box = obj.find('bndbox')
            x0, y0, x1, y1 = (
                int(float(box.findtext(k)))
                for k in ('xmin', 'ymin', 'xmax', 'ymax')
            )
            if min(x1 - x0, y1 - y0) < min_size:
                continue
            if img is None:
                img = cv2.imread(
                    osp.join(voc_root, 'JPEGImages', stem + '.jpg')
                )
            cv2.imwrite(
                osp.join(out_dir, name, f'{stem}_{n}.jpg'),
                img[max(y0, 0) : y1, max(x0, 0) : x1],
            )
            counts[name] += 1
    return counts
