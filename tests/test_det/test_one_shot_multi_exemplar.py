"""The official IA-DETR test protocol: K exemplars per sample, chosen by a
shuffle seeded with the file name, decoded together and merged."""

import random

import numpy as np
import pytest
import torch
from mmcv.transforms import BaseTransform
from mmdet.registry import DATASETS, METRICS, MODELS, TRANSFORMS
from mmdet.structures import DetDataSample
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from toy_datasets import ToyDetection

import xattn_mm.det  # noqa: F401
from xattn_mm.testing.one_shot import one_shot_batch, tiny_ia_detr_cfg


@pytest.fixture(autouse=True)
def mmdet_scope():
    init_default_scope('mmdet')


@DATASETS.register_module(force=True)
class MultiExemplarToy(ToyDetection):
    """The toy dataset at toy/{i}.png."""

    PREFIX = 'toy/'


@DATASETS.register_module(force=True)
class MultiExemplarToyCoco(MultiExemplarToy):
    """The same, with COCO-style category ids a: 9, b: 5, c: 1."""

    cat_ids = (9, 5, 1)


@TRANSFORMS.register_module(force=True)
class MultiExemplarToyTarget(BaseTransform):
    def transform(self, results):
        results['img'] = np.zeros((64, 80, 3), np.uint8)
        results['img_shape'] = results['ori_shape'] = (64, 80)
        results['scale_factor'] = (1.0, 1.0)
        return results


@TRANSFORMS.register_module(force=True)
class MultiExemplarToyCrop(BaseTransform):
    """A (10 + 2j, 12 + j) image filled with img_id + 1, j the box corner."""

    def transform(self, results):
        j = int(results['exemplar_bbox'][0])
        value = results['img_id'] + 1
        results['img'] = np.full((10 + 2 * j, 12 + j, 3), value, np.uint8)
        return results


# c (2) has 4 candidates, a (0) 2, b (1) 1; image 2's c is ignored.
IMAGES = [
    [(2, 0), (0, 0), (2, 0)],
    [(2, 0)],
    [(2, 1), (0, 0)],
    [(2, 0)],
    [(1, 0)],
]


def toy(
    dataset='MultiExemplarToy',
    images=IMAGES,
    num_exemplars=5,
    exemplar_seed='{img_path}',
    **kwargs,
):
    kwargs.setdefault('unseen_classes', ['c'])
    kwargs.setdefault('test_mode', True)
    kwargs.setdefault(
        'exemplar_sampler',
        dict(
            type='IADETRExemplarSampler',
            num_exemplars=num_exemplars,
            exemplar_seed=exemplar_seed,
        ),
    )
    return DATASETS.build(
        dict(
            type='OneShotDataset',
            dataset=dict(type=dataset, images=images),
            **kwargs,
        )
    )


def test_official_exemplars_hand_checked():
    ds = toy()
    # One sample per (image, test class present), all under draw 0; the
    # target's own instances are candidates too (as officially).
    assert ds.samples == [(0, 0, 2), (0, 1, 2), (0, 3, 2)]
    assert ds.draws == (0,) and ds.metainfo['draws'] == (0,)
    # c's 4 candidates in dataset order, repeated 5 // 4 + 1 = 2 times:
    # random.Random('toy/0.png').shuffle(list(range(8))) starts 1 0 2 5 3,
    # 'toy/1.png' 0 6 7 5 1, 'toy/3.png' 6 7 5 1 4; element i is
    # candidate i % 4.
    c = [(0, 0), (0, 2), (1, 0), (3, 0)]
    expected = {
        0: [c[1], c[0], c[2], c[1], c[3]],
        1: [c[0], c[2], c[3], c[1], c[1]],
        3: [c[2], c[3], c[1], c[1], c[0]],
    }
    for index, (_, idx, _) in enumerate(ds.samples):
        target, label, exemplars, draw = ds.get_pair(index)
        assert (target, label, draw) == (idx, 2, 0)
        assert exemplars == expected[idx]
    for idx, first in ((0, [1, 0, 2, 5, 3]), (1, [0, 6, 7, 5, 1])):
        order = list(range(8))
        random.Random(f'toy/{idx}.png').shuffle(order)
        assert order[:5] == first
    # The seed is a format string over the image's path and id.
    other = toy(exemplar_seed='data/{file_name}')
    order = list(range(8))
    random.Random('data/0.png').shuffle(order)
    assert other.get_pair(0)[2] == [c[i % 4] for i in order[:5]]
    # K = 2 <= 4 candidates: no repeat; the shuffle of 4 is 0 1 2 3.
    assert toy(num_exemplars=2).get_pair(0)[2] == [c[0], c[1]]


def test_classes_share_one_generator_in_official_order():
    # Image 0 holds c, a, c. Officially one generator per image is shuffled
    # class after class, in list(set(ids)) order: [0, 2] with the labels,
    # so a's list (2 candidates, repeated to 6) first; [1, 9] with the COCO
    # ids (c: 1, a: 9), so c first. The two give different exemplars.
    a, c = [(0, 1), (2, 1)], [(0, 0), (0, 2), (1, 0), (3, 0)]
    every = toy(test_classes='all')
    labels = every.exemplar_sampler.official_exemplars(every, 0)
    assert labels == {
        0: [a[0], a[0], a[1], a[1], a[1]],  # shuffle of 6: 2 0 1 5 3
        2: [c[1], c[2], c[3], c[1], c[0]],  # then of 8: 5 6 3 1 4
    }
    coco = toy('MultiExemplarToyCoco', test_classes='all')
    assert coco.exemplar_sampler.official_exemplars(coco, 0) == {
        2: [c[1], c[0], c[2], c[1], c[3]],  # shuffle of 8: 1 0 2 5 3
        0: [a[1], a[0], a[0], a[0], a[1]],  # then of 6: 1 4 0 2 3
    }
    # b's single candidate is the target's own box, repeated.
    assert coco.exemplar_sampler.official_exemplars(coco, 4) == {
        1: [(4, 0)] * 5
    }
    assert (0, 4, 1) in coco.samples


def test_official_draws_are_deterministic():
    ds = toy(test_classes='all')
    pairs = [ds.get_pair(i) for i in range(len(ds))]
    state = random.getstate()
    random.seed(123)
    np.random.seed(123)
    assert [ds.get_pair(i) for i in reversed(range(len(ds)))] == pairs[::-1]
    assert [toy(test_classes='all').get_pair(i) for i in range(len(ds))] == (
        pairs
    )
    random.setstate(state)
    # The global generator is left alone.
    before = random.getstate()
    ds.get_pair(0)
    assert random.getstate() == before


def test_invalid_protocol_arguments():
    with pytest.raises(ValueError, match='test protocol'):
        toy(test_mode=False)
    with pytest.raises(ValueError, match='test protocol'):
        toy(exemplar_swap=True)
    with pytest.raises(ValueError, match='num_exemplars'):
        toy(num_exemplars=0)
    with pytest.raises(KeyError, match='Official'):
        toy(exemplar_sampler=dict(type='OfficialExemplarSampler'))


def packed_toy(**kwargs):
    return toy(
        exemplar_pipeline=[dict(type='MultiExemplarToyCrop')],
        pipeline=[
            dict(type='MultiExemplarToyTarget'),
            dict(type='PackOneShotInputs'),
        ],
        **kwargs,
    )


def test_packing_and_preprocessing_shapes():
    ds = packed_toy(num_exemplars=3)
    # Image 0, K = 3 <= 4 candidates: the shuffle of 4 is 0 1 2 3, so the
    # exemplars are c[0], c[1], c[2], boxes at j = 0, 2, 0 -> crops of
    # (10, 12), (14, 14), (10, 12) filled with 1, 1, 2.
    item = ds[0]
    exemplar = item['inputs']['exemplar']
    meta = item['data_samples'].metainfo
    assert meta['exemplar_shapes'] == ((10, 12), (14, 14), (10, 12))
    assert exemplar.shape == (3, 3, 14, 14) and exemplar.dtype == torch.uint8
    assert (exemplar[0, :, :10, :12] == 1).all()
    assert exemplar[0, :, 10:].sum() == 0 and exemplar[0, :, :, 12:].sum() == 0
    assert (exemplar[1] == 1).all()
    assert (exemplar[2, :, :10, :12] == 2).all()
    assert meta['draw'] == 0 and meta['exemplar_label'] == 2
    assert meta['exemplar_instance'] == (
        (0, (0, 0, 4, 4)),
        (0, (2, 2, 6, 6)),
        (1, (0, 0, 4, 4)),
    )
    assert meta['exemplar_img_path'] == ('toy/0.png',) * 2 + ('toy/1.png',)
    assert item['inputs']['target'].shape == (3, 64, 80)

    model = MODELS.build(tiny_ia_detr_cfg())
    data = model.data_preprocessor(pseudo_collate([ds[0], ds[1]]), False)
    target, exemplars = data['inputs']['target'], data['inputs']['exemplar']
    assert target.shape == (2, 3, 64, 80)
    assert exemplars.shape == (2, 3, 3, 64, 80)
    sample = data['data_samples'][0]
    assert sample.batch_input_shape == (64, 80)
    assert sample.exemplar_shapes == ((10, 12), (14, 14), (10, 12))
    # Each exemplar is cut to its own shape: the pack's zero padding
    # becomes the canvas padding (0 after normalisation).
    pre = model.data_preprocessor
    one = (torch.ones(3) * 1 - pre.mean.flatten()) / pre.std.flatten()
    torch.testing.assert_close(exemplars[0, 0, :, 5, 5], one)
    assert exemplars[0, 0, :, 10:].abs().sum() == 0
    assert exemplars[0, 0, :, :, 12:].abs().sum() == 0
    assert exemplars[0, 1, :, :14, :14].abs().sum() > 0
    assert exemplars[0, 1, :, 14:].abs().sum() == 0


def test_preprocessor_rejects_mixed_exemplar_counts():
    model = MODELS.build(tiny_ia_detr_cfg())
    batch = one_shot_batch()
    single, stacked = batch['inputs']['exemplar']
    batch['inputs']['exemplar'] = [single, stacked[None]]
    with pytest.raises(ValueError, match='all'):
        model.data_preprocessor(batch, False)
    batch['inputs']['exemplar'] = [
        torch.stack([single] * 2),
        torch.stack([single] * 3),
    ]
    with pytest.raises(ValueError, match='same number'):
        model.data_preprocessor(batch, False)


def build_model(**test_cfg):
    torch.manual_seed(0)
    cfg = tiny_ia_detr_cfg()
    cfg['test_cfg'] = dict(cfg['test_cfg'], **test_cfg)
    model = MODELS.build(cfg)
    model.init_weights()
    return model.eval()


def pairs_batch(exemplar_seeds, stacked):
    """Two targets (seed 0), each with the exemplars of one_shot_batch
    under ``exemplar_seeds``, all 32 x 32: one (K, 3, h, w) stack per
    target, or (``stacked=False``) K single-exemplar batches."""
    batches = [
        one_shot_batch(exemplar_sizes=((32, 32), (32, 32)), seed=s)
        for s in exemplar_seeds
    ]
    base = one_shot_batch(exemplar_sizes=((32, 32), (32, 32)), seed=0)
    targets = base['inputs']['target']
    exemplars = [b['inputs']['exemplar'] for b in batches]
    if not stacked:
        return [
            dict(
                inputs=dict(target=targets, exemplar=ex),
                data_samples=[s.clone() for s in base['data_samples']],
            )
            for ex in exemplars
        ]
    return dict(
        inputs=dict(
            target=targets,
            exemplar=[torch.stack(per) for per in zip(*exemplars)],
        ),
        data_samples=base['data_samples'],
    )


def predict(model, batch):
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        return [s.pred_instances for s in model(**data, mode='predict')]


def test_identical_exemplars_give_the_single_exemplar_result():
    model = build_model()
    single = predict(model, pairs_batch([7], stacked=False)[0])
    for k in (1, 3):
        merged = predict(model, pairs_batch([7] * k, stacked=True))
        for one, many in zip(single, merged):
            assert len(many) == len(one) == 10
            torch.testing.assert_close(many.bboxes, one.bboxes)
            torch.testing.assert_close(many.scores, one.scores)
            if k > 1:
                assert (many.exemplar_index == 0).all()


def reference_merge(per_exemplar, iou_thr, max_dets):
    """The merge rule, written out on Python lists."""

    def iou(p, q):
        w = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
        h = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
        area = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1])
        return w * h / (area - w * h)

    ranked = sorted(
        (
            (-float(score), j, rank, box.tolist())
            for j, pred in enumerate(per_exemplar)
            for rank, (box, score) in enumerate(zip(pred.bboxes, pred.scores))
        ),
    )
    kept = []
    for neg_score, j, _, box in ranked:
        if len(kept) == max_dets:
            break
        if all(
            k_j == j or iou(box, k_box) <= iou_thr for _, k_j, k_box in kept
        ):
            kept.append((-neg_score, j, box))
    return kept


@pytest.mark.parametrize('iou_thr', [0.5, 0.1, 1.0])
def test_different_exemplars_are_merged_by_the_rule(iou_thr):
    model = build_model(exemplar_merge_iou=iou_thr)
    seeds = [3, 4, 5]
    per_pair = [predict(model, b) for b in pairs_batch(seeds, stacked=False)]
    merged = predict(model, pairs_batch(seeds, stacked=True))
    dropped = 0
    for i, many in enumerate(merged):
        expected = reference_merge([p[i] for p in per_pair], iou_thr, 10)
        assert len(many) == len(expected) == 10
        torch.testing.assert_close(
            many.scores, torch.tensor([s for s, _, _ in expected])
        )
        assert many.exemplar_index.tolist() == [j for _, j, _ in expected]
        torch.testing.assert_close(
            many.bboxes, torch.tensor([b for _, _, b in expected])
        )
        # Plain top-10 over the union, for comparison.
        union = torch.cat([p[i].scores for p in per_pair])
        top = union.sort(descending=True)[0][:10]
        dropped += int(not torch.equal(many.scores, top))
    if iou_thr == 1.0:
        assert dropped == 0
    else:
        assert dropped > 0  # the random model's boxes overlap a lot


def test_merge_rule_by_hand():
    model = build_model(max_per_img=None)

    def pred(*rows):
        boxes = torch.tensor([r[:4] for r in rows], dtype=torch.float)
        return InstanceData(
            bboxes=boxes,
            scores=torch.tensor([r[4] for r in rows]),
            labels=torch.zeros(len(rows), dtype=torch.long),
        )

    ex0 = pred((0, 0, 10, 10, 0.9), (1, 0, 11, 10, 0.6))  # A, B
    ex1 = pred(
        (0, 0, 10, 10, 0.8),  # A again
        (20, 20, 30, 30, 0.7),  # C
        (5, 0, 15, 10, 0.65),  # E: IoU 1/3 with A, 3/7 with F
        (21, 20, 31, 30, 0.55),  # G: IoU 0.82 with C, same exemplar
    )
    ex2 = pred((1, 0, 11, 10, 0.95))  # F: IoU 0.82 with A, 1 with B
    out = model.merge_exemplar_results([ex0, ex1, ex2])
    # F is kept; A, A again and B overlap F (another exemplar): dropped;
    # C, E and G are kept (G overlaps C, but both come from exemplar 1).
    assert out.scores.tolist() == pytest.approx([0.95, 0.7, 0.65, 0.55])
    assert out.exemplar_index.tolist() == [2, 1, 1, 1]
    model.test_cfg['max_per_img'] = 2
    assert model.merge_exemplar_results([ex0, ex1, ex2]).scores.tolist() == (
        pytest.approx([0.95, 0.7])
    )
    model.test_cfg.update(exemplar_merge_iou=1.0, max_per_img=3)
    plain = model.merge_exemplar_results([ex0, ex1, ex2])
    assert plain.scores.tolist() == pytest.approx([0.95, 0.9, 0.8])
    assert plain.exemplar_index.tolist() == [2, 0, 1]
    empty = pred((0, 0, 1, 1, 0.5))[torch.zeros(1, dtype=torch.bool)]
    assert len(model.merge_exemplar_results([empty, empty])) == 0


def test_loss_rejects_several_exemplars_and_tensor_mode_runs_pairs():
    model = build_model()
    model.train()
    data = model.data_preprocessor(pairs_batch([1, 2], stacked=True), True)
    with pytest.raises(ValueError, match='one exemplar per target'):
        model(**data, mode='loss')
    # One exemplar in a (1, 3, h, w) stack trains as a plain pair.
    data = model.data_preprocessor(pairs_batch([1], stacked=True), True)
    losses = model(**data, mode='loss')
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    data = model.data_preprocessor(pairs_batch([1, 2], stacked=True), False)
    with torch.no_grad():
        cls_scores, boxes = model(**data, mode='tensor')
    assert cls_scores.shape == (2, 4, 10, 1)  # 2 targets x 2 exemplars
    assert boxes.shape == (2, 4, 10, 4)


def test_end_to_end_through_the_metric_as_one_run():
    ds = packed_toy(num_exemplars=3, test_classes='all')
    model = build_model()
    metric = METRICS.build(dict(type='OneShotCocoMetric'))
    metric.dataset_meta = ds.metainfo
    loader = [
        pseudo_collate([ds[i] for i in range(j, min(j + 2, len(ds)))])
        for j in range(0, len(ds), 2)
    ]
    for batch in loader:
        with torch.no_grad():
            out = model.test_step(batch)
        for sample in out:
            assert isinstance(sample, DetDataSample)
            assert 0 < len(sample.pred_instances) <= 10
            assert sample.pred_instances.exemplar_index.max() < 3
        metric.process(batch, [s.to_dict() for s in out])
    metrics = metric.compute_metrics(metric.results)
    assert {k for k in metrics if k.startswith('draw')} == {
        'draw0_AP50',
        'draw0_unseen_AP50',
        'draw0_seen_AP50',
    }
