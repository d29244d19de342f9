"""OneShotDetInferencer and demo/oneshot_demo.py on a fixture IA-DETR (the
embedded synthetic dataset's config, random weights)."""

import copy
import json
import os.path as osp
import subprocess
import sys
from pathlib import Path

import mmcv
import numpy as np
import pytest
import torch
from mmdet.registry import DATASETS
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope
from mmengine.runner.checkpoint import CheckpointLoader

import xattn_mm.det  # noqa: F401
from xattn_mm.det.apis import OneShotDetInferencer
from xattn_mm.engine import UntrustedCheckpointError
from xattn_mm.testing.checkpoints import save_payload_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def fixture(synthetic_fixture):
    return synthetic_fixture


@pytest.fixture(scope='module')
def inferencer(fixture):
    return OneShotDetInferencer(
        fixture['cfg'],
        weights=fixture['checkpoint'],
        device='cpu',
        show_progress=False,
    )


def dataset_pair(fixture, index=0):
    """Item ``index`` of the config's test OneShotDataset."""
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = DATASETS.build(fixture['cfg'].test_dataloader.dataset)
        item = dataset[index]
    return item


def test_predictions_match_the_test_loop(fixture, inferencer):
    item = dataset_pair(fixture)
    sample = item['data_samples']
    expected = inferencer.model.test_step(pseudo_collate([item]))[0]
    result = inferencer(
        sample.img_path,
        exemplar=sample.exemplar_img_path,
        exemplar_bbox=sample.exemplar_instance[1],
        return_datasamples=True,
    )
    (pred,) = result['predictions']
    got, want = pred.pred_instances, expected.pred_instances
    assert len(got) == len(want) == fixture['cfg'].model.test_cfg.max_per_img
    torch.testing.assert_close(got.bboxes, want.bboxes)
    torch.testing.assert_close(got.scores, want.scores)
    assert (got.labels == 0).all()


def test_exemplar_array_equals_path_with_box(fixture, inferencer):
    item = dataset_pair(fixture, index=1)
    sample = item['data_samples']
    x1, y1, x2, y2 = (int(round(v)) for v in sample.exemplar_instance[1])
    crop = mmcv.imread(sample.exemplar_img_path)[y1:y2, x1:x2]
    target = mmcv.imread(sample.img_path)
    from_path = inferencer(
        sample.img_path,
        exemplar=sample.exemplar_img_path,
        exemplar_bbox=(x1, y1, x2, y2),
    )['predictions'][0]
    from_array = inferencer(target, exemplar=crop)['predictions'][0]
    assert from_path.keys() >= {'bboxes', 'scores', 'labels'}
    np.testing.assert_allclose(from_path['bboxes'], from_array['bboxes'])
    np.testing.assert_allclose(from_path['scores'], from_array['scores'])
    # A different exemplar changes the detections.
    whole = inferencer(target, exemplar=sample.exemplar_img_path)
    assert not np.allclose(
        whole['predictions'][0]['scores'], from_path['scores']
    )


def test_rendering_and_files(fixture, inferencer, tmp_path):
    item = dataset_pair(fixture, index=2)
    sample = item['data_samples']
    exemplar = np.zeros((40, 30, 3), np.uint8)
    exemplar[:] = (255, 0, 0)  # blue in BGR
    targets = [sample.img_path, mmcv.imread(sample.img_path)]
    result = inferencer(
        targets,
        exemplar=exemplar,
        exemplar_name='blue block',
        batch_size=2,
        return_vis=True,
        out_dir=str(tmp_path),
        no_save_pred=False,
        pred_score_thr=0.0,
    )
    assert len(result['predictions']) == 2
    height, width = sample.ori_shape
    for vis in result['visualization']:
        assert vis.shape == (height, width, 3)
        # The exemplar inset (RGB blue) sits top-left in a white frame.
        assert (vis[0, 0] == 255).all()
        assert (vis[4, 4] == (0, 0, 255)).all()
    name = osp.basename(sample.img_path)
    stem = osp.splitext(name)[0]
    assert osp.isfile(tmp_path / 'vis' / name)
    preds = json.loads((tmp_path / 'preds' / f'{stem}.json').read_text())
    assert len(preds['bboxes']) == len(preds['scores']) > 0
    assert inferencer.visualizer.default_exemplar is None  # reset
    # With no box drawn, an array target (BGR) is rendered in RGB, as a
    # path is, and the inset is the exemplar as given (not resized).
    array = mmcv.imread(sample.img_path)
    plain = inferencer(
        array, exemplar=exemplar, return_vis=True, pred_score_thr=1.1
    )['visualization'][0]
    np.testing.assert_array_equal(plain[60:, 60:], array[60:, 60:, ::-1])
    inset = inferencer(
        array,
        exemplar=sample.img_path,
        exemplar_bbox=(0, 0, 40, 20),
        return_vis=True,
        pred_score_thr=1.1,
    )['visualization'][0]
    # A 2:1 box keeps its aspect in the inset (the model reads it resized
    # to the config's square exemplar size).
    frame = (inset == 255).all(-1)
    assert frame[0, : width // 4].all() and frame[: height // 6, 0].all()
    assert not frame[height // 4, 0]


def test_invalid_inputs(fixture, inferencer):
    item = dataset_pair(fixture)
    path = item['data_samples'].img_path
    with pytest.raises(ValueError, match='exemplar_bbox'):
        inferencer(path, exemplar=path, exemplar_bbox=(10, 10, 5, 20))
    with pytest.raises(ValueError, match='lies outside'):
        inferencer(path, exemplar=path, exemplar_bbox=(5000, 10, 5100, 20))
    with pytest.raises(TypeError, match='exemplar must be'):
        inferencer(path, exemplar=3)
    cfg = copy.deepcopy(fixture['cfg'])
    cfg.test_dataloader.dataset.pop('exemplar_pipeline')
    with pytest.raises(KeyError, match='exemplar_pipeline'):
        OneShotDetInferencer(cfg, weights=fixture['checkpoint'])


def test_weights_load_under_the_checkpoint_policy(fixture, tmp_path):
    state = torch.load(fixture['checkpoint'], weights_only=True)
    # What a training checkpoint holds beyond tensors loads without trust.
    run_like = str(tmp_path / 'run.pth')
    torch.save(dict(state, meta=dict(seed=np.int64(0))), run_like)
    OneShotDetInferencer(fixture['cfg'], weights=run_like, device='cpu')
    marker = tmp_path / 'ran'
    payload = save_payload_checkpoint(
        tmp_path / 'payload.pth', marker, **state
    )
    with pytest.raises(UntrustedCheckpointError, match='posix.mkdir'):
        OneShotDetInferencer(fixture['cfg'], weights=payload, device='cpu')
    assert not marker.exists()
    # The policy was in force for the call only.
    assert (
        CheckpointLoader._schemes[''].__module__
        == 'mmengine.runner.checkpoint'
    )


def test_demo_script(fixture, tmp_path):
    item = dataset_pair(fixture, index=3)
    sample = item['data_samples']
    out_dir = tmp_path / 'out'
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / 'demo/oneshot_demo.py'),
            sample.img_path,
            str(fixture['cfg'].filename),
            '--exemplar',
            sample.exemplar_img_path,
            '--exemplar-bbox',
            *(str(v) for v in sample.exemplar_instance[1]),
            '--weights',
            fixture['checkpoint'],
            '--device',
            'cpu',
            '--out-dir',
            str(out_dir),
        ],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    name = osp.basename(sample.img_path)
    assert (out_dir / 'vis' / name).is_file()
    assert (out_dir / 'preds' / (osp.splitext(name)[0] + '.json')).is_file()
    assert f'results have been saved at {out_dir}' in proc.stdout
