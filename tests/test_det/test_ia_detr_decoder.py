import pytest
import torch
from mmdet.registry import MODELS
from torch import nn

import xattn_mm.det  # noqa: F401
from xattn_mm.det.models.layers import IADETRDecoder

B, Q, H, W, C, L = 2, 6, 4, 5, 32, 3
LAYER_CFG = dict(
    self_attn_cfg=dict(embed_dims=C, num_heads=4),
    cross_attn_cfg=dict(embed_dims=C, num_heads=4, rpb_hidden_dims=16),
    ffn_cfg=dict(feedforward_channels=64),
)


def build(type_='IADETRDecoder', **kwargs):
    torch.manual_seed(0)
    decoder = MODELS.build(
        dict(type=type_, num_layers=L, layer_cfg=LAYER_CFG, **kwargs)
    )
    decoder.init_weights()
    return decoder


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    memory_mask = torch.zeros(B, H * W, dtype=torch.bool)
    memory_mask.view(B, H, W)[1, :, -1] = True
    exemplar_mask = torch.zeros(B, H * W, dtype=torch.bool)
    exemplar_mask.view(B, H, W)[:, -1] = True
    return dict(
        query=torch.randn(B, Q, C, generator=g),
        query_pos=torch.randn(B, Q, C, generator=g),
        memory=torch.randn(B, H * W, C, generator=g),
        exemplar_memory=torch.randn(B, H * W, C, generator=g),
        reference_points=torch.rand(B, Q, 4, generator=g) * 0.5 + 0.2,
        spatial_shape=(H, W),
        valid_ratios=torch.tensor([[1.0, 1.0], [0.8, 1.0]]),
        reg_branches=nn.ModuleList([nn.Linear(C, 4) for _ in range(L)]),
        memory_pos=torch.randn(B, H * W, C, generator=g),
        exemplar_pos=torch.randn(B, H * W, C, generator=g),
        memory_mask=memory_mask,
        exemplar_mask=exemplar_mask,
    )


@pytest.mark.parametrize(
    'type_',
    [
        'IADETRDecoder',
        'MisalignedAttentionDecoder',
        'DoubleCrossAttentionDecoder',
    ],
)
def test_shapes_and_gradients(type_):
    kwargs = dict(num_align_layers=2) if type_.startswith('Double') else {}
    decoder = build(type_, **kwargs)
    args = inputs()
    for key in ('query', 'memory', 'exemplar_memory'):
        args[key].requires_grad_(True)
    hidden, refs = decoder(**args)
    assert hidden.shape == (L, B, Q, C)
    assert refs.shape == (L, B, Q, 4)
    assert ((refs > 0) & (refs < 1)).all()
    (hidden.square().mean() + refs.sum()).backward()
    for name, p in decoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for key in ('query', 'memory', 'exemplar_memory'):
        assert args[key].grad.abs().sum() > 0, key


def test_variants_differ_only_where_the_paper_says():
    ia = build()
    misaligned = build('MisalignedAttentionDecoder')
    double = build('DoubleCrossAttentionDecoder', num_align_layers=2)
    assert all(layer.cross_attn.box_rpb is not None for layer in ia.layers)
    assert all(layer.cross_attn.box_rpb is None for layer in misaligned.layers)
    assert len(double.align_layers) == 2
    ia_names = {n for n, _ in ia.named_parameters()}
    double_names = {n for n, _ in double.named_parameters()}
    assert ia_names < double_names
    assert all(n.startswith('align_layers') for n in double_names - ia_names)


def test_init_weights_truncated_normal():
    decoder = build()
    # timm-style truncation at +-2 (absolute), std 0.02, zero bias.
    layer = decoder.layers[0].ffn.layers[0][0]
    assert 0.018 < layer.weight.std() < 0.022
    assert layer.bias.abs().sum() == 0


def test_box_bias_is_recomputed_from_each_layers_boxes():
    decoder = build()
    seen = []

    def capture(module, args, kwargs):
        seen.append(kwargs['reference_boxes'].detach().clone())

    for layer in decoder.layers:
        layer.cross_attn.register_forward_pre_hook(capture, with_kwargs=True)
    args = inputs()
    _, refs = decoder(**args)
    scale = torch.cat([args['valid_ratios']] * 2, -1)[:, None]
    torch.testing.assert_close(seen[0], args['reference_points'] * scale)
    for lid in range(1, L):
        torch.testing.assert_close(seen[lid], refs[lid - 1].detach() * scale)


def test_look_forward_twice_keeps_the_refinement_graph():
    # The head predicts layer l's box from references[l - 1] plus layer l's
    # delta; with look forward twice, references[l - 1] still carries the
    # graph of layer l - 1's refinement, so that layer learns from it too.
    args = inputs()
    _, refs = build(look_forward_twice=True)(**args)
    refs[0].sum().backward()
    assert args['reg_branches'][0].weight.grad.abs().sum() > 0
    later = args['reg_branches'][1].weight.grad
    assert later is None or later.abs().sum() == 0
    _, refs = build(look_forward_twice=False)(**inputs())
    assert not refs.requires_grad


def test_one_to_one_and_one_to_many_queries_are_kept_apart():
    decoder = build()
    args = inputs()
    groups = (2, Q - 2)
    hidden, _ = decoder(**args, self_attn_groups=groups)
    changed = dict(args)
    changed['query'] = args['query'].clone()
    # A random change: a constant shift would vanish in the LayerNorm.
    changed['query'][:, 2:] += torch.randn(B, Q - 2, C)
    hidden2, _ = decoder(**changed, self_attn_groups=groups)
    torch.testing.assert_close(hidden[:, :, :2], hidden2[:, :, :2])
    assert not torch.allclose(hidden[:, :, 2:], hidden2[:, :, 2:])
    # Without groups the queries see each other.
    hidden3, _ = decoder(**changed)
    hidden4, _ = decoder(**args)
    assert not torch.allclose(hidden3[:, :, :2], hidden4[:, :, :2])


def test_invalid_arguments():
    with pytest.raises(ValueError, match='num_layers'):
        IADETRDecoder(num_layers=0)
    decoder = build()
    args = inputs()
    args['reg_branches'] = args['reg_branches'][:1]
    with pytest.raises(ValueError, match='one per layer'):
        decoder(**args)
    args = inputs()
    args['exemplar_memory'] = args['exemplar_memory'][:, :-1]
    with pytest.raises(ValueError, match='same padded grid'):
        decoder(**args)
