"""tools/model_converters/ia_detr_to_xattn_mm.py on a randomly initialised
model saved in the official IA-DETR key layout."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.layers.transformer import coordinate_to_encoding
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope

import xattn_mm.cls  # noqa: F401  (GlobalSwinTransformerV2)
import xattn_mm.det  # noqa: F401
from xattn_mm.testing.one_shot import tiny_ia_detr_cfg, tiny_swin_v2_parts

ROOT = Path(__file__).resolve().parents[1]
C, HEADS, HID, FFN, LAYERS, QUERIES, CIN = 32, 4, 16, 64, 2, 30, 64
SWIN, SWIN_HEADS, WINDOW, CPB = 16, (1, 2, 2, 4), 4, 512


def load_converter():
    path = ROOT / 'tools' / 'model_converters' / 'ia_detr_to_xattn_mm.py'
    spec = importlib.util.spec_from_file_location('ia_detr_converter', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_swin_v2(r):
    """Plain-DETR's Swin V2 ``*_2global`` backbone with its upsampling
    (models/backbone.py, models/swin_transformer_v2.py), keys and shapes,
    scaled down: 4 stages of 2 blocks, the last stage global."""
    p = 'backbone.0.net.body.'
    sd = {
        f'{p}patch_embed.proj.weight': r(SWIN, 3, 4, 4),
        f'{p}patch_embed.proj.bias': r(SWIN),
        f'{p}patch_embed.norm.weight': 1 + r(SWIN),
        f'{p}patch_embed.norm.bias': r(SWIN),
    }
    for i, heads in enumerate(SWIN_HEADS):
        c = SWIN * 2**i
        for j in range(2):
            b = f'{p}layers.{i}.blocks.{j}.'
            for norm in ('norm1', 'norm2'):
                sd[f'{b}{norm}.weight'] = 1 + r(c)
                sd[f'{b}{norm}.bias'] = r(c)
            sd[f'{b}attn.logit_scale'] = 2 + r(heads, 1, 1)
            sd[f'{b}attn.q_bias'] = r(c)
            sd[f'{b}attn.v_bias'] = r(c)
            sd[f'{b}attn.qkv.weight'] = r(3 * c, c)
            sd[f'{b}attn.proj.weight'] = r(c, c)
            sd[f'{b}attn.proj.bias'] = r(c)
            sd[f'{b}attn.cpb_mlp.0.weight'] = r(CPB, 2)
            sd[f'{b}attn.cpb_mlp.0.bias'] = r(CPB)
            sd[f'{b}attn.cpb_mlp.2.weight'] = r(heads, CPB)
            if i < 3:  # window blocks save their position tables
                sd[f'{b}attn.relative_coords_table'] = r(
                    1, 2 * WINDOW - 1, 2 * WINDOW - 1, 2
                )
                sd[f'{b}attn.relative_position_index'] = torch.zeros(
                    WINDOW**2, WINDOW**2, dtype=torch.long
                )
            sd[f'{b}mlp.fc1.weight'] = r(4 * c, c)
            sd[f'{b}mlp.fc1.bias'] = r(4 * c)
            sd[f'{b}mlp.fc2.weight'] = r(c, 4 * c)
            sd[f'{b}mlp.fc2.bias'] = r(c)
        if i < 3:
            sd[f'{p}layers.{i}.downsample.reduction.weight'] = r(2 * c, 4 * c)
            sd[f'{p}layers.{i}.downsample.norm.weight'] = 1 + r(2 * c)
            sd[f'{p}layers.{i}.downsample.norm.bias'] = r(2 * c)
    sd[f'{p}norm3.weight'] = 1 + r(8 * SWIN)
    sd[f'{p}norm3.bias'] = r(8 * SWIN)
    sd['backbone.0.upsample.0.weight'] = r(8 * SWIN, 4 * SWIN, 2, 2)
    sd['backbone.0.upsample.0.bias'] = r(4 * SWIN)
    return sd


def official_resnet(r):
    """A torchvision-named ResNet under ``backbone.0.body.`` (mmdet's
    ResNet uses the same names), with the classifier the official model
    keeps but never uses."""
    resnet = MODELS.build(tiny_ia_detr_cfg()['backbone'])
    sd = {
        f'backbone.0.body.{k}': r(*v.shape) if v.is_floating_point() else v
        for k, v in resnet.state_dict().items()
    }
    sd['backbone.0.body.fc.weight'] = r(1000, CIN)
    return sd


def official_state_dict(seed=0, backbone='resnet'):
    """Keys and shapes as the official model defines them (models/detr.py,
    models/transformer.py, models/global_rpe_indirect_decoder.py)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.1

    init_default_scope('mmdet')
    sd = official_swin_v2(r) if backbone == 'swin' else official_resnet(r)
    sd.update(
        {
            'input_proj.0.0.weight': r(C, CIN, 1, 1),
            'input_proj.0.0.bias': r(C),
            'input_proj.0.1.weight': r(C),
            'input_proj.0.1.bias': r(C),
            'query_embed.weight': r(QUERIES, C),
            'transformer.level_embed': r(1, C),
            'transformer.enc_output.weight': r(C, C),
            'transformer.enc_output.bias': r(C),
            'transformer.enc_output_norm.weight': r(C),
            'transformer.enc_output_norm.bias': r(C),
            'transformer.pos_trans.weight': r(2 * C, 2 * C),
            'transformer.pos_trans.bias': r(2 * C),
            'transformer.pos_trans_norm.weight': r(2 * C),
            'transformer.pos_trans_norm.bias': r(2 * C),
            'transformer.enc_output_proj.0.0.weight': r(C, C, 2, 2),
            'transformer.enc_output_proj.0.0.bias': r(C),
            'transformer.enc_output_proj.2.0.weight': r(C, C, 2, 2),
            'transformer.enc_output_proj.2.0.bias': r(C),
            'transformer.enc_output_proj.3.0.weight': r(C, C, 2, 2),
            'transformer.enc_output_proj.3.0.bias': r(C),
            'transformer.enc_output_proj.3.1.ln.weight': r(C),
            'transformer.enc_output_proj.3.1.ln.bias': r(C),
            'transformer.enc_output_proj.3.3.weight': r(C, C, 2, 2),
            'transformer.enc_output_proj.3.3.bias': r(C),
            'transformer.decoder.final_layer_norm.weight': r(C),
            'transformer.decoder.final_layer_norm.bias': r(C),
        }
    )
    for lid in range(LAYERS):
        p = f'transformer.decoder.layers.{lid}.'
        for mlp in ('cpb_mlp1', 'cpb_mlp2'):
            sd[f'{p}cross_attn.{mlp}.0.weight'] = r(HID, 2)
            sd[f'{p}cross_attn.{mlp}.0.bias'] = r(HID)
            sd[f'{p}cross_attn.{mlp}.2.weight'] = r(HEADS, HID)
        for name in ('q', 'k', 'v', 'proj'):
            sd[f'{p}cross_attn.{name}.weight'] = r(C, C)
            sd[f'{p}cross_attn.{name}.bias'] = r(C)
        for norm in ('norm1', 'norm2', 'norm3'):
            sd[f'{p}{norm}.weight'] = 1 + r(C)
            sd[f'{p}{norm}.bias'] = r(C)
        sd[f'{p}self_attn.in_proj_weight'] = r(3 * C, C)
        sd[f'{p}self_attn.in_proj_bias'] = r(3 * C)
        sd[f'{p}self_attn.out_proj.weight'] = r(C, C)
        sd[f'{p}self_attn.out_proj.bias'] = r(C)
        sd[f'{p}linear1.weight'] = r(FFN, C)
        sd[f'{p}linear1.bias'] = r(FFN)
        sd[f'{p}linear2.weight'] = r(C, FFN)
        sd[f'{p}linear2.bias'] = r(C)
    for i in range(LAYERS + 1):
        sd[f'class_embed.{i}.weight'] = r(3, C)
        sd[f'class_embed.{i}.bias'] = r(3)
        for j, shape in enumerate(((C, C), (C, C), (4, C))):
            sd[f'bbox_embed.{i}.layers.{j}.weight'] = r(*shape)
            sd[f'bbox_embed.{i}.layers.{j}.bias'] = r(shape[0])
    # The decoder's aliases of the heads, saved twice by the official model.
    for key in list(sd):
        if key.startswith(('class_embed.', 'bbox_embed.')):
            sd[f'transformer.decoder.{key}'] = sd[key]
    return sd


@pytest.fixture
def converted_model():
    init_default_scope('mmdet')
    official = official_state_dict()
    converted, passed = load_converter().convert(official, LAYERS)
    model = MODELS.build(tiny_ia_detr_cfg(num_layers=LAYERS))
    result = model.load_state_dict(converted, strict=False)
    return model, official, result, passed


def test_every_official_tensor_lands_in_the_model(converted_model):
    model, official, result, passed = converted_model
    assert passed == []
    assert result.missing_keys == result.unexpected_keys == []
    torch.testing.assert_close(
        model.backbone.layer2[0].downsample[0].weight,
        official['backbone.0.body.layer2.0.downsample.0.weight'],
    )


@pytest.fixture
def converted_swin_model():
    init_default_scope('mmdet')
    official = official_state_dict(backbone='swin')
    converted, passed = load_converter().convert(official, LAYERS)
    model = MODELS.build(
        tiny_ia_detr_cfg(num_layers=LAYERS, **tiny_swin_v2_parts())
    )
    return model, official, converted, passed


def test_swin_v2_backbone_loads_strictly(converted_swin_model):
    model, official, converted, passed = converted_swin_model
    assert passed == []
    assert not any('relative_' in k for k in converted)
    # Strict: every official tensor lands, every model tensor is covered.
    model.load_state_dict(converted, strict=True)
    torch.testing.assert_close(
        model.neck.necks[0].layers[0].weight,
        official['backbone.0.upsample.0.weight'],
    )
    torch.testing.assert_close(
        model.neck.necks[1].convs[0].conv.weight,
        official['input_proj.0.0.weight'],
    )
    torch.testing.assert_close(
        model.backbone.stages[3].blocks[1].ffn.layers[1].weight,
        official['backbone.0.net.body.layers.3.blocks.1.mlp.fc2.weight'],
    )


def test_swin_v2_patch_merging_matches_the_official_order(
    converted_swin_model,
):
    model, official, converted, _ = converted_swin_model
    model.load_state_dict(converted, strict=True)
    p = 'backbone.0.net.body.layers.1.downsample.'
    c, h, w = 2 * SWIN, 5, 6
    x = torch.randn(2, h, w, c)
    # Official PatchMerging: pad to even, concatenate the 2x2 neighbours
    # (0, 0), (1, 0), (0, 1), (1, 1), reduce, then normalise.
    padded = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
    merged = torch.cat(
        [
            padded[:, 0::2, 0::2],
            padded[:, 1::2, 0::2],
            padded[:, 0::2, 1::2],
            padded[:, 1::2, 1::2],
        ],
        -1,
    )
    expected = F.layer_norm(
        F.linear(merged, official[f'{p}reduction.weight']),
        (2 * c,),
        official[f'{p}norm.weight'],
        official[f'{p}norm.bias'],
        eps=1e-6,
    )
    actual, out_hw = model.backbone.stages[2].downsample(
        x.flatten(1, 2), (h, w)
    )
    assert tuple(out_hw) == (3, 3)
    torch.testing.assert_close(
        actual, expected.flatten(1, 2), atol=1e-5, rtol=1e-5
    )


def test_logit_rows_and_box_branches(converted_model):
    model, official, _, _ = converted_model
    head = model.bbox_head
    torch.testing.assert_close(
        head.cls_branches[0].weight, official['class_embed.0.weight'][1:2]
    )
    torch.testing.assert_close(
        head.cls_branches[LAYERS].bias,
        official[f'class_embed.{LAYERS}.bias'][0:1],
    )
    torch.testing.assert_close(
        head.reg_branches[1][4].weight,
        official['bbox_embed.1.layers.2.weight'],
    )


def official_decoder_layer(
    sd, p, tgt, query_pos, boxes, src, src_pos, prmpt, prmpt_pos, h, w, stride
):
    """One official pre-norm IA decoder layer (forward_pre), written from
    global_rpe_indirect_decoder.py, on official-layout tensors."""

    def ln(x, name):
        return F.layer_norm(
            x, (C,), sd[f'{p}{name}.weight'], sd[f'{p}{name}.bias']
        )

    def lin(x, name):
        return F.linear(x, sd[f'{p}{name}.weight'], sd[f'{p}{name}.bias'])

    def mlp(x, name):
        x = F.relu(lin(x, f'cross_attn.{name}.0'))
        return F.linear(x, sd[f'{p}cross_attn.{name}.2.weight'])

    t2 = ln(tgt, 'norm2')
    q = k = t2 + query_pos
    out, _ = F.multi_head_attention_forward(
        q.transpose(0, 1),
        k.transpose(0, 1),
        t2.transpose(0, 1),
        C,
        HEADS,
        sd[f'{p}self_attn.in_proj_weight'],
        sd[f'{p}self_attn.in_proj_bias'],
        None,
        None,
        False,
        0.0,
        sd[f'{p}self_attn.out_proj.weight'],
        sd[f'{p}self_attn.out_proj.bias'],
        training=False,
        need_weights=False,
    )
    tgt = tgt + out.transpose(0, 1)
    t2 = ln(tgt, 'norm1') + query_pos
    ref = torch.cat(
        [
            boxes[..., :2] - boxes[..., 2:] / 2,
            boxes[..., :2] + boxes[..., 2:] / 2,
        ],
        -1,
    )
    ref[..., 0::2] *= w * stride
    ref[..., 1::2] *= h * stride
    pos_x = torch.linspace(0.5, w - 0.5, w)[None, None, :, None] * stride
    pos_y = torch.linspace(0.5, h - 0.5, h)[None, None, :, None] * stride
    rpe_x = mlp(ref[..., None, 0::2] - pos_x, 'cpb_mlp1')
    rpe_y = mlp(ref[..., None, 1::2] - pos_y, 'cpb_mlp2')
    rpe = (rpe_x[:, :, None] + rpe_y[:, :, :, None]).flatten(2, 3)
    rpe = rpe.permute(0, 3, 1, 2)
    b, nq, _ = t2.shape

    def heads(x):
        return x.view(b, -1, HEADS, C // HEADS).transpose(1, 2)

    qh = heads(lin(t2, 'cross_attn.q')) * (C // HEADS) ** -0.5
    kh = heads(lin(prmpt + prmpt_pos, 'cross_attn.k'))
    vh = heads(lin(src + src_pos, 'cross_attn.v'))
    attn = torch.softmax(qh @ kh.transpose(-2, -1) + rpe, -1)
    out = lin((attn @ vh).transpose(1, 2).reshape(b, nq, C), 'cross_attn.proj')
    tgt = tgt + out
    ffn = lin(F.relu(lin(ln(tgt, 'norm3'), 'linear1')), 'linear2')
    return tgt + ffn


def test_decoder_layer_matches_the_official_computation(converted_model):
    model, official, _, _ = converted_model
    torch.manual_seed(1)
    b, q, h, w = 2, 5, 3, 4
    args = dict(
        tgt=torch.randn(b, q, C),
        query_pos=torch.randn(b, q, C),
        boxes=torch.rand(b, q, 4) * 0.4 + 0.3,
        src=torch.randn(b, h * w, C),
        src_pos=torch.randn(b, h * w, C),
        prmpt=torch.randn(b, h * w, C),
        prmpt_pos=torch.randn(b, h * w, C),
    )
    expected = official_decoder_layer(
        official,
        'transformer.decoder.layers.1.',
        h=h,
        w=w,
        stride=16.0,
        **args,
    )
    actual = model.decoder.layers[1](
        args['tgt'],
        args['query_pos'],
        args['src'],
        args['prmpt'],
        args['boxes'],
        (h, w),
        16.0,
        memory_pos=args['src_pos'],
        exemplar_pos=args['prmpt_pos'],
    )
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_proposal_position_embedding_order(converted_model):
    model, official, _, _ = converted_model
    boxes = torch.rand(2, 7, 4)
    # Official get_proposal_pos_embed: (x, y, w, h) blocks.
    dim_t = 10000 ** (2 * (torch.arange(C // 2) // 2) / (C // 2))
    pos = boxes[..., None] * 2 * math.pi / dim_t
    pos = torch.stack(
        [pos[..., 0::2].sin(), pos[..., 1::2].cos()], -1
    ).flatten(2)
    expected = F.linear(
        pos,
        official['transformer.pos_trans.weight'],
        official['transformer.pos_trans.bias'],
    )
    actual = model.pos_trans_fc(
        coordinate_to_encoding(boxes, num_feats=C // 2)
    )
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_cli_reads_official_checkpoints_and_refuses_payloads(tmp_path):
    import argparse
    import subprocess
    import sys

    from xattn_mm.testing.checkpoints import save_payload_checkpoint

    tool = ROOT / 'tools' / 'model_converters' / 'ia_detr_to_xattn_mm.py'
    dst = tmp_path / 'ours.pth'
    marker = tmp_path / 'payload_ran'
    payload = save_payload_checkpoint(
        tmp_path / 'payload.pth', marker, model=official_state_dict()
    )
    layers = ['--num-decoder-layers', str(LAYERS)]
    cmd = [sys.executable, str(tool), payload, str(dst), *layers]
    refused = subprocess.run(cmd, capture_output=True, text=True)
    assert refused.returncode != 0
    assert 'payload.pth' in refused.stderr
    assert '--trust-checkpoint' in refused.stderr
    assert not marker.exists() and not dst.exists()
    # Official checkpoints keep argparse arguments: read with no flag.
    src = tmp_path / 'official.pth'
    torch.save(
        {'model': official_state_dict(), 'args': argparse.Namespace(lr=2e-4)},
        src,
    )
    cmd = [sys.executable, str(tool), str(src), str(dst), *layers]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    saved = torch.load(dst, weights_only=True)['state_dict']
    assert 'decoder.layers.1.cross_attn.box_rpb.y_mlp.2.weight' in saved
