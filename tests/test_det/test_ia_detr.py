import pytest
import torch
from mmdet.registry import MODELS
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope

import xattn_mm.det  # noqa: F401
from xattn_mm.testing.one_shot import one_shot_batch, tiny_ia_detr_cfg


@pytest.fixture(autouse=True)
def mmdet_scope():
    init_default_scope('mmdet')


def build(**kwargs):
    torch.manual_seed(0)
    model = MODELS.build(tiny_ia_detr_cfg(**kwargs))
    model.init_weights()
    return model


DECODERS = [
    'IADETRDecoder',
    'MisalignedAttentionDecoder',
    'DoubleCrossAttentionDecoder',
]


@pytest.mark.parametrize('decoder_type', DECODERS)
def test_loss_with_empty_and_non_empty_ground_truth(decoder_type):
    model = build(decoder_type=decoder_type)
    # Two targets of different sizes; the second has no ground truth.
    data = model.data_preprocessor(one_shot_batch(num_boxes=(2, 0)), True)
    losses = model(**data, mode='loss')
    for key in (
        'loss_cls',
        'loss_bbox',
        'loss_iou',
        'd0.loss_cls',
        'enc_loss_cls',
        'loss_cls_one2many',
        'd0.loss_iou_one2many',
    ):
        assert key in losses, key
    for key, value in losses.items():
        assert torch.isfinite(value), key
    sum(losses.values()).backward()
    assert model.query_embedding.weight.grad.abs().sum() > 0
    assert model.backbone.conv1.weight.grad.abs().sum() > 0


def test_all_empty_ground_truth():
    model = build()
    data = model.data_preprocessor(one_shot_batch(num_boxes=(0, 0)), True)
    losses = model(**data, mode='loss')
    assert losses['loss_bbox'] == 0 and losses['loss_cls'] > 0


@pytest.mark.parametrize('decoder_type', DECODERS)
def test_predict_and_tensor(decoder_type):
    model = build(decoder_type=decoder_type).eval()
    data = model.data_preprocessor(one_shot_batch(), False)
    with torch.no_grad():
        results = model(**data, mode='predict')
        cls_scores, boxes = model(**data, mode='tensor')
    for result, (h, w) in zip(results, ((64, 80), (48, 64))):
        pred = result.pred_instances
        assert len(pred) == 10  # test_cfg.max_per_img
        assert (pred.labels == 0).all()
        assert (pred.bboxes[:, 0::2] <= w + 1e-3).all()
        assert (pred.bboxes[:, 1::2] <= h + 1e-3).all()
    # Only the one-to-one queries at test time; one branch per layer.
    assert cls_scores.shape == (2, 2, 10, 1)
    assert boxes.shape == (2, 2, 10, 4)


def test_train_step_overfits_a_fixed_pair():
    model = build(num_queries_one2many=0)
    optim = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3))
    batch = one_shot_batch(
        sizes=((64, 64),), exemplar_sizes=((32, 32),), num_boxes=(2,)
    )
    history = []
    for _ in range(20):
        log = model.train_step(batch, optim)
        history.append(float(log['loss']))
    assert history[-1] < 0.6 * history[0], history


def test_preprocessor_puts_both_images_on_one_canvas():
    model = build()
    batch = one_shot_batch(
        sizes=((40, 40), (32, 48)), exemplar_sizes=((70, 20), (16, 16))
    )
    data = model.data_preprocessor(batch, False)
    target, exemplar = data['inputs']['target'], data['inputs']['exemplar']
    # The canvas covers the tallest exemplar, rounded up to 16.
    assert target.shape == exemplar.shape == (2, 3, 80, 48)
    metas = [s.metainfo for s in data['data_samples']]
    assert metas[0]['batch_input_shape'] == (80, 48)
    assert metas[0]['exemplar_shape'] == (70, 20)
    # Top-left aligned, padding (zero after normalisation) elsewhere.
    assert exemplar[1, :, 16:].abs().sum() == 0
    assert exemplar[1, :, :16, :16].abs().sum() > 0
    assert target[0, :, 40:].abs().sum() == 0


def test_frozen_backbone_mode():
    model = build(freeze_backbone=True)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    model.train()
    assert not model.backbone.training
    data = model.data_preprocessor(one_shot_batch(), True)
    losses = model(**data, mode='loss')
    sum(losses.values()).backward()
    assert model.neck.convs[0].conv.weight.grad is not None


def test_invalid_configuration_and_inputs():
    cfg = tiny_ia_detr_cfg()
    cfg['bbox_head']['num_pred_layer'] = 2
    with pytest.raises(ValueError, match='num_pred_layer'):
        MODELS.build(cfg)
    with pytest.raises(ValueError, match='num_queries'):
        MODELS.build(tiny_ia_detr_cfg(num_queries=0))
    model = build()
    with pytest.raises(TypeError, match='inputs=dict'):
        model.extract_feat(torch.zeros(1, 3, 32, 32))
    with pytest.raises(TypeError, match='dict\\(target'):
        model.data_preprocessor(dict(inputs=[torch.zeros(3, 8, 8)]), False)
