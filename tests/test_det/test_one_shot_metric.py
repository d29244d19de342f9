import io
import json
import logging
from fractions import Fraction

import numpy as np
import pytest
import torch
from mmdet.registry import METRICS, TRANSFORMS
from mmdet.structures import DetDataSample
from mmengine.evaluator import Evaluator
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import xattn_mm.det  # noqa: F401
from xattn_mm.det.evaluation import OneShotCocoMetric

CLASSES = ('a', 'b', 'traffic light', 'd')
META = dict(
    classes=CLASSES,
    seen_classes=('a', 'b'),
    unseen_classes=('traffic light', 'd'),
    test_class_names=CLASSES,
    draws=(0, 1),
)
A, B, TL, D = range(4)
FAR = [200.0, 200.0, 220.0, 220.0]  # overlaps no ground truth below


@pytest.fixture(autouse=True)
def mmdet_scope():
    init_default_scope('mmdet')


def box(x, y, w=20.0, h=20.0):
    return [x, y, x + w, y + h]


def sample(draw, img_id, label, gt, dets=(), scores=None, ignore=()):
    """A data sample as mmengine's evaluator hands it to ``process``
    (``DetDataSample.to_dict()``): metainfo keys and a dict of tensors."""
    scores = [1.0] * len(dets) if scores is None else scores
    return dict(
        img_id=img_id,
        ori_shape=(240, 320),
        img_shape=(480, 640),
        exemplar_label=label,
        draw=draw,
        instances=[
            dict(bbox=b, bbox_label=0, ignore_flag=int(i in ignore))
            for i, b in enumerate(gt)
        ],
        pred_instances=dict(
            bboxes=torch.tensor(dets, dtype=torch.float32).reshape(-1, 4),
            scores=torch.tensor(scores, dtype=torch.float32),
            labels=torch.zeros(len(dets), dtype=torch.long),
        ),
    )


def evaluate(samples, meta=META, **kwargs):
    """(rounded metrics, unrounded {draw: {label: AP50}}). Unrounded values
    are compared approximately: COCOeval's precision is tp / (tp + fp + eps),
    1 - 1e-16 for a single TP."""
    metric = OneShotCocoMetric(**kwargs)
    metric.dataset_meta = meta
    metric.process({}, samples)
    return metric.compute_metrics(metric.results), metric.compute_ap50(
        metric.results
    )


# Ground truth per (image, class): several images, classes, two per image.
GT = {
    (1, A): [box(0, 0), box(50, 50)],
    (1, TL): [box(100, 10, 30, 40)],
    (2, A): [box(10, 100)],
    (2, B): [box(60, 60, 40, 20)],
    (2, D): [box(120, 120), box(0, 0, 50, 50), box(150, 0)],
    (3, TL): [box(5, 5, 60, 60)],
    (3, B): [box(100, 100)],
}


@pytest.mark.parametrize('ap_mode', ['coco101', 'voc07'])
def test_ground_truth_as_detections_scores_one(ap_mode):
    samples = [
        sample(k, img, label, gt, dets=gt)
        for k in (0, 1)
        for (img, label), gt in GT.items()
    ]
    metrics, ap = evaluate(samples, ap_mode=ap_mode, classwise=True)
    assert set(ap) == {0, 1}
    for aps in ap.values():
        assert aps == pytest.approx({A: 1.0, B: 1.0, TL: 1.0, D: 1.0})
    assert metrics == {
        'AP50': 1.0,
        'unseen_AP50': 1.0,
        'seen_AP50': 1.0,
        'draw0_AP50': 1.0,
        'draw0_unseen_AP50': 1.0,
        'draw0_seen_AP50': 1.0,
        'draw1_AP50': 1.0,
        'draw1_unseen_AP50': 1.0,
        'draw1_seen_AP50': 1.0,
        'AP50_a': 1.0,
        'AP50_b': 1.0,
        'AP50_traffic_light': 1.0,
        'AP50_d': 1.0,
    }


def test_hand_computed_ap_with_missed_box_and_false_positives():
    # Class d, 4 GT boxes in two images; g2 is never found. Detections by
    # score: 0.9 TP (g1), 0.8 FP, 0.7 FP, 0.6 TP (g3), 0.5 TP (g4):
    #   recall    1/4  1/4  1/4  2/4  3/4
    #   precision 1    1/2  1/3  2/4  3/5
    # Interpolated (max precision at this recall or beyond):
    #   1 up to recall 1/4, then 3/5 up to recall 3/4, then 0.
    # Without the interpolation, recall in (1/4, 2/4] would get 1/2.
    # 101-point: thresholds 0.00..0.25 (26 of them) -> 1, 0.26..0.75 (50)
    #   -> 3/5, 0.76..1.00 (25) -> 0: AP = (26 + 50 * 3/5) / 101 = 56/101.
    # VOC07 11-point: 0, .1, .2 -> 1; .3 .. .7 (5) -> 3/5; .8, .9, 1 -> 0:
    #   AP = (3 + 5 * 3/5) / 11 = 6/11.
    g1, g2, g3, g4 = box(0, 0), box(40, 0), box(0, 40), box(40, 40)
    samples = [
        sample(0, 1, D, [g1, g2], [g1, FAR], [0.9, 0.8]),
        sample(0, 2, D, [g3, g4], [FAR, g3, g4], [0.7, 0.6, 0.5]),
    ]
    for ap_mode, expected in (('coco101', 56 / 101), ('voc07', 6 / 11)):
        metrics, ap = evaluate(samples, ap_mode=ap_mode)
        assert ap[0][D] == pytest.approx(expected, abs=1e-6)
        assert metrics['unseen_AP50'] == round(expected, 3)
        assert metrics['draw0_unseen_AP50'] == round(expected, 3)
        assert 'seen_AP50' not in metrics  # no seen class evaluated


def _capture_log():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    MMLogger.get_current_instance().addHandler(handler)
    return stream, handler


def test_classwise_table_and_group_means():
    # a: perfect (1), b: wrong boxes (0), traffic light: perfect (1),
    # d: one of its 2 GT found, no FP -> precision 1 up to recall 1/2:
    # 51/101 (coco101).
    d_ap = 51 / 101
    samples = [
        sample(0, 1, A, [box(0, 0)], [box(0, 0)]),
        sample(0, 1, B, [box(50, 50)], [FAR]),
        sample(0, 2, TL, [box(0, 0)], [box(0, 0)]),
        sample(0, 2, D, [box(50, 0), box(50, 50)], [box(50, 0)]),
    ]
    stream, handler = _capture_log()
    try:
        metrics, ap = evaluate(samples, classwise=True)
    finally:
        MMLogger.get_current_instance().removeHandler(handler)
    assert ap[0] == pytest.approx({A: 1.0, B: 0.0, TL: 1.0, D: d_ap})
    assert metrics['seen_AP50'] == 0.5  # a, b
    assert metrics['unseen_AP50'] == round((1 + d_ap) / 2, 3)  # tl, d
    assert metrics['AP50'] == round((2 + d_ap) / 4, 3)
    assert metrics['AP50_b'] == 0.0
    assert metrics['AP50_d'] == round(d_ap, 3)
    assert metrics['AP50_traffic_light'] == 1.0
    log = stream.getvalue()
    lines = {
        line.split('|')[1].strip(): line
        for line in log.splitlines()
        if line.startswith('|')
    }
    assert '| unseen |' in lines['traffic light']
    assert '| seen   |' in lines['b'] and '0.000' in lines['b']
    assert f'{d_ap:.3f}' in lines['d']
    assert f'{(1 + d_ap) / 2:.3f}' in lines['mean (unseen)']
    assert '0.500' in lines['mean (seen)']
    # without classwise, no per-class keys
    metrics, _ = evaluate(samples)
    assert not any(key.startswith('AP50_') for key in metrics)


def test_test_classes_without_samples_are_left_out():
    meta = dict(META, test_class_names=('traffic light', 'd'))
    samples = [sample(0, 1, TL, [box(0, 0)], [box(0, 0)])]
    metrics, ap = evaluate(samples, meta=meta)
    assert ap == {0: {TL: pytest.approx(1.0)}}
    assert metrics == {
        'AP50': 1.0,
        'unseen_AP50': 1.0,
        'draw0_AP50': 1.0,
        'draw0_unseen_AP50': 1.0,
    }
    with pytest.raises(ValueError, match='test_class_names'):
        evaluate([sample(0, 1, A, [box(0, 0)], [box(0, 0)])], meta=meta)


def test_five_draws_average():
    # Draws 0, 1, 2 find every box, draws 3, 4 only far boxes: per-draw AP
    # 1, 1, 1, 0, 0 for each class -> mean 0.6.
    samples = []
    for k in range(5):
        for (img, label), gt in GT.items():
            dets = gt if k < 3 else [FAR] * len(gt)
            samples.append(sample(k, img, label, gt, dets))
    metrics, ap = evaluate(samples, meta=dict(META, draws=tuple(range(5))))
    assert sorted(ap) == [0, 1, 2, 3, 4]
    for group in ('', 'unseen_', 'seen_'):
        assert metrics[f'{group}AP50'] == 0.6
        for k in range(5):
            assert metrics[f'draw{k}_{group}AP50'] == (1.0 if k < 3 else 0.0)


def test_ignored_ground_truth_is_neither_tp_nor_fp():
    regular, hard = box(0, 0), box(60, 60)

    def ap50(dets, scores, ignore=(1,)):
        samples = [sample(0, 1, TL, [regular, hard], dets, scores, ignore)]
        return evaluate(samples)[1][0][TL]

    # Not an FP: a higher-scored detection on the ignored box leaves AP 1,
    # where a higher-scored FP halves the precision at the only TP.
    assert ap50([hard, regular], [0.95, 0.9]) == pytest.approx(1.0)
    assert ap50([FAR, regular], [0.95, 0.9]) == pytest.approx(0.5)
    # Not a TP: with only the ignored box found, nothing is (AP 0); the
    # same box not ignored is a second TP.
    assert ap50([hard], [0.95]) == 0.0
    assert ap50([hard, regular], [0.95, 0.9], ignore=()) == pytest.approx(1)
    # Not a miss: the ignored box unfound leaves AP 1; not ignored, recall
    # stops at 1/2 (51/101).
    assert ap50([regular], [0.9]) == pytest.approx(1.0)
    assert ap50([regular], [0.9], ignore=()) == pytest.approx(51 / 101)


@pytest.mark.parametrize('key', ['exemplar_label', 'draw', 'instances'])
def test_missing_sample_key(key):
    metric = OneShotCocoMetric()
    metric.dataset_meta = META
    bad = sample(0, 1, A, [box(0, 0)])
    del bad[key]
    with pytest.raises(KeyError, match=f"'{key}'.*PackOneShotInputs"):
        metric.process({}, [bad])


def test_bad_meta_draw_and_args():
    metric = OneShotCocoMetric()
    metric.process({}, [sample(0, 1, A, [box(0, 0)])])
    metric.dataset_meta = {'classes': CLASSES}
    with pytest.raises(KeyError, match='test_class_names.*OneShotDataset'):
        metric.compute_metrics(metric.results)
    with pytest.raises(ValueError, match='training sample'):
        metric.process({}, [sample(-1, 1, A, [box(0, 0)])])
    with pytest.raises(ValueError, match='ap_mode'):
        OneShotCocoMetric(ap_mode='voc12')
    metric = OneShotCocoMetric()
    metric.dataset_meta = META
    twice = sample(0, 1, A, [box(0, 0)])
    metric.process({}, [twice, twice])
    with pytest.raises(ValueError, match='two samples'):
        metric.compute_ap50(metric.results)


def _iou(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def _reference_ap(gts, dets, mode):
    """AP50 of one class written from the definitions; ``gts`` {image:
    boxes} (disjoint), ``dets`` [(score, image, box)]."""
    npos = sum(len(b) for b in gts.values())
    matched, tp = set(), []
    for _, img, d in sorted(dets, key=lambda x: -x[0]):
        hits = [
            (img, j)
            for j, g in enumerate(gts.get(img, ()))
            if _iou(d, g) >= 0.5 and (img, j) not in matched
        ]
        matched.update(hits[:1])
        tp.append(bool(hits))
    cum = np.cumsum(tp)
    recall = [Fraction(int(c), npos) for c in cum]
    precision = [Fraction(int(c), i + 1) for i, c in enumerate(cum)]
    if mode == 'voc07':
        thrs = [Fraction(k, 10) for k in range(11)]
    else:  # COCO's float thresholds, compared with float recalls
        thrs = np.linspace(0, 1, 101)
        recall = [float(r) for r in recall]
    interp = [
        max([p for r, p in zip(recall, precision) if r >= t], default=0)
        for t in thrs
    ]
    return float(sum(interp) / len(thrs))


@pytest.mark.parametrize('seed', range(4))
def test_matches_reference_implementation(seed):
    rng = np.random.default_rng(seed)
    samples, gts, dets = [], {}, []
    for img in range(6):
        # 10 GT boxes in total: recalls of exactly 0.1 .. 1.0 occur.
        cells = rng.choice(16, size=(1, 2, 2, 1, 2, 2)[img], replace=False)
        gt = [box(40.0 * (c % 4), 40.0 * (c // 4), 30, 30) for c in cells]
        pred = [
            list(np.add(g, rng.normal(0, 4, 4)))
            for g in gt
            if rng.random() < 0.8
        ] + [box(*rng.uniform(0, 150, 2), 30, 30) for _ in range(2)]
        # as the metric sees them (float32 tensors)
        pred = np.float32(pred).astype(float).tolist()
        scores = np.float32(rng.random(len(pred))).astype(float).tolist()
        gts[img] = gt
        dets += [(s, img, p) for s, p in zip(scores, pred)]
        samples.append(sample(0, img, D, gt, pred, scores))
    for mode in ('coco101', 'voc07'):
        _, ap = evaluate(samples, ap_mode=mode)
        expected = _reference_ap(gts, dets, mode)
        assert ap[0][D] == pytest.approx(expected, abs=1e-9)


def test_evaluator_end_to_end_with_prefix_and_dump(tmp_path):
    evaluator = Evaluator(
        METRICS.build(
            dict(
                type='OneShotCocoMetric',
                outfile_prefix=str(tmp_path / 'res'),
            )
        )
    )
    evaluator.dataset_meta = META
    data_samples = []
    for img, label in ((1, TL), (2, A)):
        ds = DetDataSample(
            metainfo=dict(
                img_id=img,
                ori_shape=(100, 100),
                exemplar_label=label,
                draw=3,
                instances=[dict(bbox=box(0, 0), bbox_label=0, ignore_flag=0)],
            )
        )
        ds.pred_instances = InstanceData(
            bboxes=torch.tensor([box(0, 0), FAR]),
            scores=torch.tensor([0.9, 0.1]),
            labels=torch.zeros(2, dtype=torch.long),
        )
        data_samples.append(ds)
    evaluator.process(data_samples)
    metrics = evaluator.evaluate(2)
    assert metrics['oneshot/unseen_AP50'] == 1.0
    assert metrics['oneshot/seen_AP50'] == 1.0
    assert metrics['oneshot/draw3_AP50'] == 1.0
    gt = json.loads((tmp_path / 'res.draw3.gt.json').read_text())
    assert [c['name'] for c in gt['categories']] == ['a', 'traffic light']
    assert len(gt['images']) == 2 and len(gt['annotations']) == 2
    dets = json.loads((tmp_path / 'res.draw3.bbox.json').read_text())
    assert len(dets) == 4 and dets[0]['bbox'] == [0.0, 0.0, 20.0, 20.0]


def test_pack_one_shot_inputs_keeps_original_instances():
    instances = [dict(bbox=[1.0, 2.0, 30.0, 40.0], bbox_label=0)]
    packed = TRANSFORMS.build(dict(type='PackOneShotInputs'))(
        dict(
            img=np.zeros((8, 8, 3), np.uint8),
            exemplar_img=np.zeros((4, 4, 3), np.uint8),
            img_id=7,
            instances=instances,
            exemplar_label=2,
            draw=1,
        )
    )
    ds = packed['data_samples']
    assert ds.instances == instances
    assert ds.exemplar_label == 2 and ds.draw == 1
