"""CoAE's COCO exemplar ("reference") pools, as BHRL ships them.

CoAE, BHRL and IA-DETR draw COCO exemplars not from every instance but from
the instances a Mask R-CNN detection matches (IoU > 0.5, score > 0.7).
BHRL's ``ref_ann_file/id_ref_instances_{train,val}2017.pkl`` hold them: a
dict from the COCO category id to a list of records, of which BHRL reads
only ``record['id']``, the COCO annotation id (BHRL
``mmdet/datasets/one_shot_coco.py``, ``load_annotations`` and
``prepare_test_ref_img``; box and image come from the instances file).
"""

import os.path as osp
import pickle
from collections import defaultdict
from typing import Dict, List, Tuple

from mmengine.fileio import load

Instance = Tuple[int, int]  # (data index, instance index)


def _coco_box(bbox) -> Tuple[float, ...]:
    """mmdet's box of a COCO ``[x, y, w, h]`` (``CocoDataset``'s
    arithmetic)."""
    x, y, w, h = bbox
    return (x, y, x + w, y + h)


def _annotation_id(record, path: str):
    if isinstance(record, dict) and 'id' in record:
        return record['id']
    if isinstance(record, int):
        return record
    raise ValueError(
        f'reference_pool {path!r}: a record must be a dict with the COCO '
        f'annotation id under "id" (or the id itself), got {record!r}.'
    )


def load_reference_pool(
    path: str, dataset, keep_ignored: bool
) -> Dict[int, List[Instance]]:
    """The exemplar pool of each class of ``dataset`` from a reference-pool
    pickle, in the file's order.

    Args:
        path (str): The pickle: ``{coco category id: [record, ...]}``, each
            record a dict holding the annotation id under ``'id'`` (BHRL's
            format) or the id itself.
        dataset (CocoDataset): The wrapped dataset (its ``ann_file`` is
            read again for the annotation ids, which mmdet does not keep).
        keep_ignored (bool): Keep entries that are crowd objects (BHRL's
            test draw does not check; its training draw redraws them).

    Returns:
        dict[int, list[tuple[int, int]]]: class label -> (data index,
        instance index) entries.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The dataset is not a COCO-style dataset, a category or
            annotation id of the pickle is not in the annotation file, or
            an annotation is not an instance of the dataset (mmdet drops
            boxes under 1 px or outside the image).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'reference_pool {path!r} does not exist (CoAE / BHRL '
            'id_ref_instances_{train,val}2017.pkl; reference_pool=None '
            'draws from every instance).'
        )
    cat_ids = getattr(dataset, 'cat_ids', None)
    ann_file = getattr(dataset, 'ann_file', '')
    if cat_ids is None or not osp.isfile(ann_file):
        raise ValueError(
            'reference_pool needs a COCO-style wrapped dataset (cat_ids and '
            f'a COCO annotation file), got {type(dataset).__name__} with '
            f'ann_file {ann_file!r}.'
        )
    with open(path, 'rb') as f:
        pool = pickle.load(f)
    if not isinstance(pool, dict):
        raise ValueError(
            f'reference_pool {path!r} must hold a dict from COCO category '
            f'id to records, got {type(pool).__name__}.'
        )
    annotations = {a['id']: a for a in load(ann_file)['annotations']}
    # (img_id, label, box) -> instance, for the dataset's instances.
    index = {}
    for idx in range(len(dataset)):
        info = dataset.get_data_info(idx)
        for j, inst in enumerate(info['instances']):
            key = (info['img_id'], inst['bbox_label'], tuple(inst['bbox']))
            index.setdefault(key, (idx, j, inst.get('ignore_flag', 0)))
    label_of = {cat: label for label, cat in enumerate(cat_ids)}
    out: Dict[int, List[Instance]] = defaultdict(list)
    missing = []
    for cat, records in pool.items():
        if cat not in label_of:
            raise ValueError(
                f'reference_pool {path!r}: category id {cat!r} is not a '
                f'category of {ann_file!r}.'
            )
        for record in records:
            ann_id = _annotation_id(record, path)
            ann = annotations.get(ann_id)
            if ann is None or ann['category_id'] != cat:
                raise ValueError(
                    f'reference_pool {path!r}: annotation id {ann_id!r} '
                    f'(category {cat}) is not in {ann_file!r}.'
                )
            key = (ann['image_id'], label_of[cat], _coco_box(ann['bbox']))
            found = index.get(key)
            if found is None:
                missing.append(ann_id)
            elif keep_ignored or not found[2]:
                out[label_of[cat]].append(found[:2])
    if missing:
        raise ValueError(
            f'reference_pool {path!r}: annotations {missing[:10]} '
            f'({len(missing)} in all) are not instances of the dataset '
            '(mmdet drops boxes under 1 px or outside the image, and images '
            'its filter_cfg removes).'
        )
    return out
