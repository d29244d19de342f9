import json
import os.path as osp

import cv2
import numpy as np
import pytest
from mmdet.registry import DATASETS
from mmengine.registry import init_default_scope

import xattn_mm.det  # noqa: F401
from xattn_mm.det.datasets import one_shot_split
from xattn_mm.det.datasets.synthetic_oneshot import (
    SYNTHETIC_CLASSES,
    SYNTHETIC_UNSEEN,
    generate_synthetic_oneshot,
)


@pytest.fixture(scope='module')
def synth(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synth'))
    files = generate_synthetic_oneshot(root, num_train=40, num_val=30)
    return root, files


def test_files_are_coco_and_reproducible(synth, tmp_path):
    root, files = synth
    train = json.load(open(files['train']))
    assert [c['name'] for c in train['categories']] == list(SYNTHETIC_CLASSES)
    assert len(train['images']) == 40
    per_image = {}
    for ann in train['annotations']:
        x, y, w, h = ann['bbox']
        assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128
        assert 16 <= w == h <= 40
        per_image.setdefault(ann['image_id'], set()).add(ann['category_id'])
    # Two or three classes in every image: the image alone never says
    # which objects the exemplar asks for.
    assert all(2 <= len(c) <= 3 for c in per_image.values())
    assert len(per_image) == 40
    img = cv2.imread(osp.join(root, 'images', 'train', '000001.png'))
    assert img.shape == (128, 128, 3)
    again = generate_synthetic_oneshot(str(tmp_path), num_train=40, num_val=30)
    assert json.load(open(again['train'])) == train
    assert np.array_equal(
        cv2.imread(osp.join(str(tmp_path), 'images', 'train', '000001.png')),
        img,
    )
    with pytest.raises(ValueError, match='object_size'):
        generate_synthetic_oneshot(str(tmp_path), object_size=(8, 100))


def test_split_and_one_shot_wrapper(synth):
    init_default_scope('mmdet')
    root, _ = synth
    seen, unseen = one_shot_split('synthetic', SYNTHETIC_CLASSES)
    assert (
        unseen
        == SYNTHETIC_UNSEEN
        == (
            'chartreuse square',
            'azure disk',
            'rose triangle',
        )
    )
    assert len(seen) == 9
    coco = dict(
        type='CocoDataset',
        data_root=root,
        metainfo=dict(classes=SYNTHETIC_CLASSES),
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=[],
    )
    train = DATASETS.build(
        dict(
            type='OneShotDataset',
            split='synthetic',
            dataset=dict(
                coco,
                ann_file='annotations/instances_train.json',
                data_prefix=dict(img='images/train/'),
            ),
        )
    )
    unseen_labels = {SYNTHETIC_CLASSES.index(c) for c in unseen}
    assert train.samples
    for _, labels in train.samples:
        assert not set(labels) & unseen_labels
    test = DATASETS.build(
        dict(
            type='OneShotDataset',
            split='synthetic',
            test_mode=True,
            draws=[0],
            dataset=dict(
                coco,
                ann_file='annotations/instances_val.json',
                data_prefix=dict(img='images/val/'),
                test_mode=True,
            ),
        )
    )
    assert {label for _, _, label in test.samples} <= unseen_labels
