import subprocess
import sys

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope

import xattn_mm.cls  # noqa: F401  (mmpretrain.GlobalSwinTransformerV2)
import xattn_mm.det  # noqa: F401
from xattn_mm.testing.amp import AMP_DTYPES, autocast_parity
from xattn_mm.testing.one_shot import (
    one_shot_batch,
    tiny_ia_detr_cfg,
    tiny_swin_v2_parts,
)


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
    # the shipped ResNet freezes its stem and first stage (frozen_stages=1)
    assert model.backbone.conv1.weight.grad is None
    assert model.backbone.layer3[0].downsample[0].weight.grad.abs().sum() > 0


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


def test_preprocessor_puts_both_images_on_one_canvas(copy_spy):
    model = build()
    batch = one_shot_batch(
        sizes=((40, 40), (32, 48)), exemplar_sizes=((70, 20), (16, 16))
    )
    data = model.data_preprocessor(batch, False)
    assert copy_spy and all(copy_spy), copy_spy  # all non_blocking
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
    # The detector derives these head settings, as DeformableDETR does.
    for key, value in (('num_pred_layer', 3), ('as_two_stage', True)):
        cfg = tiny_ia_detr_cfg()
        cfg['bbox_head'][key] = value
        with pytest.raises(AssertionError, match='detector.__init__'):
            MODELS.build(cfg)
    cfg = tiny_ia_detr_cfg()
    cfg['bbox_head']['num_queries_one2one'] = 10
    with pytest.raises(ValueError, match='num_queries_one2one'):
        MODELS.build(cfg)
    with pytest.raises(ValueError, match='with_box_refine'):
        MODELS.build(tiny_ia_detr_cfg(with_box_refine=False))
    with pytest.raises(ValueError, match='num_queries'):
        MODELS.build(tiny_ia_detr_cfg(num_queries=0))
    model = build()
    with pytest.raises(TypeError, match='inputs=dict'):
        model.extract_feat(torch.zeros(1, 3, 32, 32))
    with pytest.raises(TypeError, match='dict\\(target'):
        model.data_preprocessor(dict(inputs=[torch.zeros(3, 8, 8)]), False)


def test_num_queries_sets_the_one_to_one_split_everywhere(monkeypatch):
    # As --cfg-options model.num_queries=12 on a shipped config would.
    model = build(num_queries=12, num_queries_one2many=13)
    assert model.bbox_head.num_queries_one2one == 12
    assert model.bbox_head.num_pred_layer == model.decoder.num_layers + 1
    assert model.query_embedding.num_embeddings == 12 + 13
    seen = {}
    decode = model.forward_decoder

    def spy(**kwargs):
        seen['groups'] = kwargs['self_attn_groups']
        seen['queries'] = kwargs['query'].shape[1]
        return decode(**kwargs)

    monkeypatch.setattr(model, 'forward_decoder', spy)
    data = model.data_preprocessor(one_shot_batch(), True)
    losses = model(**data, mode='loss')
    # the self-attention mask separates 12 from 13, the loss matches the 12
    # one-to-one and the 13 one-to-many
    assert seen == dict(groups=(12, 13), queries=25)
    assert 'loss_cls' in losses and 'loss_cls_one2many' in losses
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(one_shot_batch(), False)
        model(**data, mode='predict')
    assert seen == dict(groups=None, queries=12)


def loss_and_predict(model):
    data = model.data_preprocessor(one_shot_batch(), True)
    losses = model(**data, mode='loss')
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(one_shot_batch(), False)
        results = model(**data, mode='predict')
    assert len(results[0].pred_instances) == 10
    return losses


def test_mmdet_swin_backbone_cut_at_stride_16():
    neck = tiny_ia_detr_cfg()['neck']
    neck['in_channels'] = [64]
    model = build(
        backbone=dict(
            type='SwinTransformer',
            embed_dims=16,
            depths=(2, 2, 2),
            num_heads=(1, 2, 4),
            window_size=4,
            out_indices=(2,),
        ),
        neck=neck,
    )
    loss_and_predict(model)
    assert model.backbone.patch_embed.projection.weight.grad is not None


def test_mmpretrain_backbone_from_a_config_file(tmp_path):
    # A fresh process: the config's custom_imports alone must register
    # everything, the mmpretrain backbone included.
    config = tmp_path / 'ia_detr_swin_v2.py'
    model = tiny_ia_detr_cfg(**tiny_swin_v2_parts())
    config.write_text(
        "custom_imports = dict(imports=['xattn_mm.det', 'xattn_mm.cls'], "
        'allow_failed_imports=False)\n'
        "default_scope = 'mmdet'\n"
        f'model = {model!r}\n'
    )
    script = (
        'import sys, torch\n'
        'from mmengine.config import Config\n'
        'from mmengine.registry import init_default_scope\n'
        'cfg = Config.fromfile(sys.argv[1])\n'
        'init_default_scope(cfg.default_scope)\n'
        'from mmdet.registry import MODELS\n'
        'from xattn_mm.testing.one_shot import one_shot_batch\n'
        'model = MODELS.build(cfg.model)\n'
        'model.init_weights()\n'
        'data = model.data_preprocessor(one_shot_batch(), True)\n'
        'losses = model(**data, mode="loss")\n'
        'sum(losses.values()).backward()\n'
        'print(type(model.backbone).__name__, type(model.neck).__name__)\n'
        'print(all(torch.isfinite(v) for v in losses.values()))\n'
    )
    done = subprocess.run(
        [sys.executable, '-c', script, str(config)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-2:] == [
        'GlobalSwinTransformerV2 SequentialNeck',
        'True',
    ]


def test_mmpretrain_swin_v2_with_upsampling_neck():
    model = build(**tiny_swin_v2_parts())
    losses = loss_and_predict(model)
    assert losses['loss_cls'] > 0
    assert model.neck.necks[0].layers[0].weight.grad is not None
    grad = model.backbone.stages[3].blocks[1].attn.w_msa.qkv.weight.grad
    assert grad.abs().sum() > 0


def test_feature_stride_must_match():
    parts = tiny_swin_v2_parts()
    parts['neck'] = parts['neck']['necks'][1]
    parts['neck']['in_channels'] = [128]  # stride 32, no upsampling
    model = build(**parts)
    data = model.data_preprocessor(one_shot_batch(), True)
    with pytest.raises(
        ValueError, match='is 2x3 .* feat_stride=16 expects 4x6'
    ):
        model(**data, mode='loss')


def test_exemplar_aware_encoder_conditions_the_proposals():
    encoder = dict(
        num_layers=1,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=32, num_heads=4),
            cross_attn_cfg=dict(embed_dims=32, num_heads=4),
            ffn_cfg=dict(embed_dims=32, feedforward_channels=64),
        ),
    )
    model = build(encoder=encoder)
    model.eval()
    batch = one_shot_batch(num_boxes=(2, 1))
    data = model.data_preprocessor(batch, False)
    feats = model.extract_feat(data['inputs'])
    enc_in, _ = model.pre_transformer(feats, data['data_samples'])
    memory = model.forward_encoder(**enc_in)['memory']
    assert memory.shape == enc_in['feat'].shape
    # The target tokens now depend on the exemplar ...
    other = dict(enc_in, exemplar_memory=enc_in['exemplar_memory'].flip(0))
    assert not torch.allclose(memory, model.forward_encoder(**other)['memory'])
    # ... but not on the exemplar's padding, which is never attended.
    padded = enc_in['exemplar_mask']
    assert padded.any()
    noisy = enc_in['exemplar_memory'].masked_fill(padded[..., None], 7.0)
    torch.testing.assert_close(
        memory,
        model.forward_encoder(**dict(enc_in, exemplar_memory=noisy))['memory'],
    )
    # Without an encoder the target tokens pass through.
    plain = build()
    assert plain.forward_encoder(**enc_in)['memory'] is enc_in['feat']
    model.train()
    losses = model(**model.data_preprocessor(batch, True), mode='loss')
    sum(losses.values()).backward()
    assert (
        model.encoder.layers[0].cross_attn.attn.in_proj_weight.grad.abs().sum()
        > 0
    )


# Measured on CPU autocast (relative L2 error against float32 of the
# eval-mode head outputs / of the gradients of a fixed random projection of
# them), worst of the three decoders: fp16 3.0e-5 / 1.5e-4, bf16
# 6.6e-2 / 1.7e-2.
AMP_TOLERANCE = {torch.float16: 1e-3, torch.bfloat16: 0.15}


@pytest.mark.parametrize('dtype', AMP_DTYPES)
@pytest.mark.parametrize('decoder_type', DECODERS)
def test_autocast_matches_float32_and_trains(dtype, decoder_type):
    model = build(decoder_type=decoder_type)
    data = model.data_preprocessor(one_shot_batch(num_boxes=(2, 1)), True)
    model.eval()
    errors = autocast_parity(
        model, lambda m: torch.cat(m(**data, mode='tensor'), -1), dtype
    )
    assert errors['finite']
    assert errors['output'] < AMP_TOLERANCE[dtype], errors
    assert errors['grad'] < AMP_TOLERANCE[dtype], errors
    # Training: matching, the proposal and one-to-many losses in float32.
    model.train()
    with torch.autocast('cpu', dtype=dtype):
        losses = model(**data, mode='loss')
    assert all(v.dtype == torch.float32 for v in losses.values())
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    for name, param in model.named_parameters():
        if param.grad is not None:
            assert torch.isfinite(param.grad).all(), name


def test_fp16_logits_above_9_keep_the_matcher_finite():
    # fp16 rounds sigmoid(10) to 1: a focal matching cost computed on fp16
    # logits is -inf there and scipy's assignment raises.
    model = build(num_queries_one2many=0)
    data = model.data_preprocessor(one_shot_batch(num_boxes=(2, 1)), True)
    with torch.no_grad():
        for branch in model.bbox_head.cls_branches:
            branch.weight.zero_()
            branch.bias.fill_(10.0)
    with torch.autocast('cpu', dtype=torch.float16):
        losses = model(**data, mode='loss')
        logits = model.bbox_head.cls_branches[0](
            torch.zeros(1, model.embed_dims)
        )
    assert logits.dtype == torch.float16 and torch.sigmoid(logits) == 1
    assert all(torch.isfinite(v) for v in losses.values()), losses
