"""IA-DETR stage 1 as the official ``upretrain`` runs it: the patch target
and the base-class targets on a second channel (data side), the contrastive
loss on the matched queries, and the stage-2 load of a stage-1 head."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS, TRANSFORMS
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.registry import init_default_scope
from toy_datasets import ToyDetection, ToyLoad  # noqa: F401  (registers)

import xattn_mm.det  # noqa: F401
from xattn_mm.det.models.dense_heads.ia_detr_head import contrastive_loss
from xattn_mm.testing.one_shot import one_shot_batch, tiny_ia_detr_cfg


@pytest.fixture(autouse=True)
def mmdet_scope():
    init_default_scope('mmdet')


def test_patch_then_base_boxes_with_their_classes():
    boxes = np.array([[2, 2, 10, 12], [20, 4, 30, 9]], np.float32)
    results = dict(
        img=np.zeros((40, 48, 3), np.uint8),
        gt_bboxes=HorizontalBoxes(boxes),
        gt_bboxes_labels=np.array([4, 7]),
        gt_ignore_flags=np.array([False, True]),
    )
    np.random.seed(0)
    out = TRANSFORMS.build(
        dict(type='RandomPatchExemplar', min_size=4, base_boxes=True)
    )(results)
    x1, y1, x2, y2 = out['gt_bboxes'].numpy()[0]
    assert out['exemplar_img'].shape[:2] == (y2 - y1, x2 - x1)
    np.testing.assert_array_equal(out['gt_bboxes'].numpy()[1:], boxes)
    np.testing.assert_array_equal(out['gt_bboxes_labels'], [0, 1, 1])
    np.testing.assert_array_equal(out['gt_ignore_flags'], [0, 0, 1])
    np.testing.assert_array_equal(out['gt_instance_classes'], [-1, 4, 7])
    packed = TRANSFORMS.build(dict(type='PackOneShotInputs'))(out)
    gt = packed['data_samples'].gt_instances
    assert gt.classes.tolist() == [-1, 4] and gt.labels.tolist() == [0, 1]
    with pytest.raises(KeyError, match='LoadAnnotations'):
        TRANSFORMS.build(dict(type='RandomPatchExemplar', base_boxes=True))(
            dict(img=np.zeros((40, 48, 3), np.uint8))
        )


def test_seen_class_targets_keep_every_seen_box_and_its_class():
    from mmdet.registry import DATASETS

    images = [[(0, 0), (1, 0), (2, 0), (0, 1)], [(0, 0)], [(1, 0)]]
    ds = DATASETS.build(
        dict(
            type='OneShotDataset',
            dataset=dict(type='ToyDetection', images=images),
            unseen_classes=['c'],
            train_targets='seen_classes',
            exemplar_pipeline=[dict(type='ToyLoad')],
        )
    )
    np.random.seed(0)
    item = ds[0]
    # a, b and the ignored a stay with their labels; the unseen c goes.
    assert [i['bbox_label'] for i in item['instances']] == [0, 1, 0]
    with pytest.raises(ValueError, match='train_targets'):
        DATASETS.build(
            dict(
                type='OneShotDataset',
                dataset=dict(type='ToyDetection', images=images),
                unseen_classes=['c'],
                train_targets='all',
            )
        )


def reference_contrastive(features, classes, tau):
    """The loss row by row, in plain loops."""
    f = F.normalize(features, dim=-1)
    per_class = []
    for c in sorted(set(classes.tolist()) - {-1}):
        idx = [i for i, k in enumerate(classes.tolist()) if k == c]
        others = [i for i, k in enumerate(classes.tolist()) if k != c]
        rows = []
        for i in idx:
            for j in idx:
                logits = [float(f[i] @ f[j]) / tau]
                logits += [float(f[i] @ f[n]) / tau for n in others]
                rows.append(-logits[0] + np.log(np.exp(logits).sum()))
        per_class.append(np.mean(rows))
    return float(np.mean(per_class))


def test_contrastive_loss_against_the_rows_written_out():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(7, 5, generator=g)
    classes = torch.tensor([-1, 3, 3, 5, 3, 5, 8])
    loss = contrastive_loss(features, classes, 0.5)
    assert float(loss) == pytest.approx(
        reference_contrastive(features, classes, 0.5), rel=1e-5
    )
    # Negatives are detached: the gradient reaches a negative only as an
    # anchor or positive of its own class (the patch, class -1, never).
    features.requires_grad_(True)
    contrastive_loss(features, classes, 0.5).backward()
    assert features.grad[0].abs().sum() == 0
    assert features.grad[1:].abs().sum() > 0
    assert float(contrastive_loss(features, torch.full((7,), -1), 0.5)) == 0


def stage1_model(**head):
    cfg = tiny_ia_detr_cfg()
    cfg['bbox_head'].update(num_classes=2, **head)
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def stage1_batch():
    return one_shot_batch(num_boxes=(3, 2), stage1=True)


def test_stage1_losses_and_channel_0_predictions():
    model = stage1_model(contrastive_cfg=dict())
    assert model.bbox_head.contrastive_cfg == dict(
        embed_dims=128, temperature=0.5, loss_weight=2.0
    )
    batch = model.data_preprocessor(stage1_batch(), True)
    losses = model(**batch, mode='loss')
    for key in ('loss_con', 'd0.loss_con', 'loss_con_one2many'):
        assert torch.isfinite(losses[key]), key
    assert float(losses['loss_con']) > 0
    sum(losses.values()).backward()
    assert (
        model.bbox_head.contrastive_embeds[1].layers[0].weight.grad.abs().sum()
        > 0
    )
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(stage1_batch(), False)
        results = model(**data, mode='predict')
    assert all((r.pred_instances.labels == 0).all() for r in results)
    with pytest.raises(ValueError, match='unknown keys'):
        stage1_model(contrastive_cfg=dict(tau=0.1))
    with pytest.raises(KeyError, match='gt_instances.classes'):
        model.train()
        model(**model.data_preprocessor(one_shot_batch(), True), mode='loss')


def test_stage2_head_keeps_channel_0_of_a_stage1_checkpoint():
    stage1 = stage1_model(contrastive_cfg=dict())
    torch.manual_seed(1)
    stage2 = MODELS.build(tiny_ia_detr_cfg())
    result = stage2.load_state_dict(stage1.state_dict(), strict=False)
    assert result.missing_keys == []
    assert all('contrastive_embeds' in k for k in result.unexpected_keys)
    for ours, theirs in zip(
        stage2.bbox_head.cls_branches, stage1.bbox_head.cls_branches
    ):
        torch.testing.assert_close(ours.weight, theirs.weight[:1])
        torch.testing.assert_close(ours.bias, theirs.bias[:1])
