import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

import xattn_mm.det  # noqa: F401
from xattn_mm.det.visualization import OneShotDetLocalVisualizer


def pair_sample(tmp_path):
    exemplar_file = osp.join(str(tmp_path), 'exemplar.png')
    source = np.zeros((50, 60, 3), np.uint8)
    source[10:30, 20:40] = (0, 0, 255)  # a red (BGR) box to crop
    mmcv.imwrite(source, exemplar_file)
    sample = DetDataSample(
        metainfo=dict(
            img_shape=(100, 120),
            exemplar_label=2,
            exemplar_img_path=exemplar_file,
            exemplar_instance=(7, (20.0, 10.0, 40.0, 30.0)),
        )
    )
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[60.0, 50.0, 100.0, 90.0]]),
        labels=torch.tensor([0]),
    )
    sample.pred_instances = InstanceData(
        bboxes=torch.tensor([[58.0, 52.0, 98.0, 92.0]]),
        labels=torch.tensor([0]),
        scores=torch.tensor([0.9]),
    )
    return sample


def test_pair_is_drawn_with_the_exemplar_inset(tmp_path):
    sample = pair_sample(tmp_path)
    vis = OneShotDetLocalVisualizer(name='test_pair', inset_ratio=0.3)
    vis.dataset_meta = dict(classes=('a', 'b', 'c'))
    crop = vis.load_exemplar(sample)
    assert crop.shape == (20, 20, 3)
    assert (crop == (255, 0, 0)).all()  # RGB
    out = osp.join(str(tmp_path), 'pair.png')
    image = np.full((100, 120, 3), 128, np.uint8)
    vis.add_datasample('pair', image, sample, out_file=out)
    drawn = mmcv.imread(out, channel_order='rgb')
    assert drawn.shape == (100, 240, 3)  # ground truth | predictions
    # Each panel has the exemplar (30 px, framed in white) top-left.
    for x0 in (0, 120):
        assert (drawn[5:25, x0 + 5 : x0 + 25] == (255, 0, 0)).all()
        assert (drawn[0, x0 : x0 + 30] == 255).all()
    # The boxes are named after the exemplar's class, not label 0.
    relabelled = vis._relabel(sample)
    assert relabelled.pred_instances.labels.tolist() == [2]
    assert relabelled.gt_instances.labels.tolist() == [2]
    assert sample.pred_instances.labels.tolist() == [0]  # not modified


def test_missing_exemplar_metainfo():
    vis = OneShotDetLocalVisualizer(name='test_missing')
    with pytest.raises(KeyError, match='exemplar_img_path'):
        vis.add_datasample('x', np.zeros((8, 8, 3), np.uint8), DetDataSample())
    with pytest.raises(ValueError, match='inset_ratio'):
        OneShotDetLocalVisualizer(name='test_bad', inset_ratio=0)
