"""tools/model_converters/vit_to_mmpretrain.py: torchvision and timm ViTs
(random weights, small) give the same logits after conversion."""

import importlib.util
from pathlib import Path

import pytest
import torch
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS

import xattn_mm.cls  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
C, HEADS, LAYERS, FFN, CLASSES = 32, 4, 2, 64, 5
ARCH = dict(
    embed_dims=C, num_layers=LAYERS, num_heads=HEADS, feedforward_channels=FFN
)


def load_tool(name):
    path = ROOT / 'tools' / 'model_converters' / f'{name}.py'
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    init_default_scope('mmpretrain')


def randomise(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model.eval()


def classifier(backbone, head='VisionTransformerClsHead', **head_kwargs):
    backbone = dict(arch=ARCH, img_size=32, patch_size=8, **backbone)
    backbone.setdefault('type', 'VisionTransformer')
    model = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=backbone,
            head=dict(
                type=head,
                num_classes=CLASSES,
                in_channels=C,
                **head_kwargs,
            ),
        )
    )
    return model.eval()


def check_same_logits(source, target_cfg, fmt, tmp_path):
    tool = load_tool('vit_to_mmpretrain')
    path = tmp_path / 'src.pth'
    torch.save(source.state_dict(), path)
    state = tool.convert(tool.load_source(str(path)))
    assert tool.detect_format(source.state_dict()) == fmt
    model = classifier(**target_cfg)
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(x, mode='tensor')
        ref = source(x)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def torchvision_vit(size=32):
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        image_size=size,
        patch_size=8,
        num_layers=LAYERS,
        num_heads=HEADS,
        hidden_dim=C,
        mlp_dim=FFN,
        num_classes=CLASSES,
    )


def test_torchvision_vit(tmp_path):
    source = randomise(torchvision_vit())
    check_same_logits(source, dict(backbone={}), 'torchvision', tmp_path)


timm_vit = pytest.importorskip(
    'timm.models.vision_transformer',
    reason='timm (requirements/tests.txt) checks the timm mapping',
)


def timm_model(cls, **kwargs):
    return randomise(
        cls(
            img_size=32,
            patch_size=8,
            embed_dim=C,
            depth=LAYERS,
            num_heads=HEADS,
            mlp_ratio=FFN / C,
            num_classes=CLASSES,
            **kwargs,
        )
    )


@pytest.mark.parametrize(
    'timm_kwargs, backbone',
    [
        # ViT / DeiT, with layer scale.
        (dict(init_values=0.1), dict(layer_scale_init_value=0.1)),
        # Global average pooling with fc_norm.
        (
            dict(global_pool='avg', fc_norm=True),
            dict(out_type='avg_featmap', final_norm=False),
        ),
        # CLIP-style: pre-norm, no patch bias, eps 1e-5.
        (
            dict(
                pre_norm=True,
                norm_layer=torch.nn.LayerNorm,
            ),
            dict(pre_norm=True, norm_cfg=dict(type='LN', eps=1e-5)),
        ),
    ],
)
def test_timm_vit(timm_kwargs, backbone, tmp_path):
    source = timm_model(timm_vit.VisionTransformer, **timm_kwargs)
    check_same_logits(source, dict(backbone=backbone), 'timm', tmp_path)


def test_timm_distilled_deit(tmp_path):
    from timm.models.deit import VisionTransformerDistilled

    source = timm_model(VisionTransformerDistilled)
    target = dict(
        backbone=dict(type='DistilledVisionTransformer'),
        head='DeiTClsHead',
    )
    check_same_logits(source, target, 'timm', tmp_path)


def test_unknown_keys_and_layouts_are_named(tmp_path):
    tool = load_tool('vit_to_mmpretrain')
    with pytest.raises(ValueError, match='blocks.0.attn.q_norm.weight'):
        tool.convert(
            {
                'patch_embed.proj.weight': torch.zeros(1),
                'blocks.0.attn.q_norm.weight': torch.zeros(1),
            }
        )
    with pytest.raises(ValueError, match='Cannot tell'):
        tool.convert({'foo': torch.zeros(1)})
    no_head = tool.convert(
        {
            'conv_proj.weight': torch.zeros(1),
            'heads.head.bias': torch.zeros(1),
        },
        head=False,
    )
    assert list(no_head) == ['backbone.patch_embed.projection.weight']
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        tool.load_source(str(tmp_path / 'missing.pth'))


def test_img_size_resizes_the_position_embedding_as_torchvision(tmp_path):
    from mmpretrain.models.utils import resize_pos_embed
    from torchvision.models.vision_transformer import interpolate_embeddings

    tool = load_tool('vit_to_mmpretrain')
    source = randomise(torchvision_vit(32)).state_dict()
    # A smooth embedding of scale 1, as a pretrained one is.
    grid = torch.linspace(0, 3.0, 16)
    smooth = torch.sin(grid[:, None] + torch.arange(C) / 5.0)
    source['encoder.pos_embedding'][0, 1:] = smooth
    resized = interpolate_embeddings(64, 8, dict(source))
    state = tool.convert(dict(source))
    tool.resize_for(state, 64)
    torch.testing.assert_close(
        state['backbone.pos_embed'],
        resized['encoder.pos_embedding'],
        rtol=0,
        atol=0,
    )
    # The converted model at 64 px is torchvision's resized model.
    model = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(
                type='VisionTransformer', arch=ARCH, img_size=64, patch_size=8
            ),
            head=dict(
                type='VisionTransformerClsHead',
                num_classes=CLASSES,
                in_channels=C,
            ),
        )
    ).eval()
    model.load_state_dict(state)
    reference = torchvision_vit(64).eval()
    reference.load_state_dict(resized)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(
            model(x, mode='tensor'), reference(x), atol=1e-4, rtol=1e-4
        )
    # mmpretrain's load-time resize (align_corners=False) is another one:
    # 0.158 apart at most here.
    theirs = resize_pos_embed(
        source['encoder.pos_embedding'], (4, 4), (8, 8), 'bicubic', 1
    )
    gap = (theirs - state['backbone.pos_embed']).abs().max()
    assert gap > 0.05, gap
    with pytest.raises(ValueError, match='multiple of the patch size'):
        tool.resize_for(tool.convert(dict(source)), 60)
