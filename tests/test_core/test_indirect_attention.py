import math

import pytest
import torch

from xattn_mm.core import (
    BoxRelativePositionBias,
    IndirectAttention,
    expand_axial_bias,
)
from xattn_mm.testing.amp import AMP_DTYPES, autocast_parity

B, Q, H, W, C, HEADS, STRIDE = 2, 5, 4, 6, 32, 4, 16.0


def _boxes(seed=0):
    g = torch.Generator().manual_seed(seed)
    ctr = torch.rand(B, Q, 2, generator=g) * 0.6 + 0.2
    wh = torch.rand(B, Q, 2, generator=g) * 0.4 + 0.05
    return torch.cat([ctr, wh], -1)


def _tokens(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(B, n, C, generator=g) for n in (Q, H * W, H * W, H * W, Q)
    ]


def plain_detr_rpb(x_mlp, y_mlp, boxes, height, width, stride, mode):
    """BoxRPB written as Plain-DETR's decoder does: xyxy boxes in input
    pixels, linspace pixel centres, rpe_x/rpe_y summed and permuted."""
    ref = torch.cat(
        [
            boxes[..., :2] - boxes[..., 2:] / 2,
            boxes[..., :2] + boxes[..., 2:] / 2,
        ],
        -1,
    )
    ref = ref.clone()
    ref[..., 0::2] *= width * stride
    ref[..., 1::2] *= height * stride
    pos_x = torch.linspace(0.5, width - 0.5, width)[None, None, :, None]
    pos_y = torch.linspace(0.5, height - 0.5, height)[None, None, :, None]
    delta_x = ref[..., None, 0::2] - pos_x * stride
    delta_y = ref[..., None, 1::2] - pos_y * stride
    if mode == 'abs_log8':
        delta_x = torch.sign(delta_x) * torch.log2(delta_x.abs() + 1) / 3
        delta_y = torch.sign(delta_y) * torch.log2(delta_y.abs() + 1) / 3
    rpe_x, rpe_y = x_mlp(delta_x), y_mlp(delta_y)
    rpe = (rpe_x[:, :, None] + rpe_y[:, :, :, None]).flatten(2, 3)
    return rpe.permute(0, 3, 1, 2)


def explicit_attention(layer, q_in, k_in, v_in, bias, mask):
    attn = layer.attn
    q = attn.q_proj(q_in).unflatten(-1, (HEADS, -1)).transpose(1, 2)
    k = attn.k_proj(k_in).unflatten(-1, (HEADS, -1)).transpose(1, 2)
    v = attn.v_proj(v_in).unflatten(-1, (HEADS, -1)).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = logits.masked_fill(mask[:, None, None], float('-inf'))
    out = torch.softmax(logits, -1) @ v
    return attn.out_proj(out.transpose(1, 2).flatten(2))


@pytest.mark.parametrize('mode', ['linear', 'abs_log8'])
def test_axial_bias_equals_plain_detr_dense_bias(mode):
    rpb = BoxRelativePositionBias(HEADS, hidden_dims=16, delta_mode=mode)
    boxes = _boxes()
    rpe_y, rpe_x = rpb(boxes, (H, W), STRIDE)
    assert rpe_y.shape == (B, HEADS, Q, H)
    assert rpe_x.shape == (B, HEADS, Q, W)
    dense = plain_detr_rpb(rpb.x_mlp, rpb.y_mlp, boxes, H, W, STRIDE, mode)
    torch.testing.assert_close(
        expand_axial_bias(rpe_y, rpe_x), dense, atol=1e-5, rtol=1e-5
    )


def test_delta_modes_by_hand():
    rpb = BoxRelativePositionBias(1, hidden_dims=4)
    with torch.no_grad():
        for mlp in (rpb.x_mlp, rpb.y_mlp):
            mlp[0].weight.copy_(
                torch.tensor(
                    [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]
                )
            )
            mlp[0].bias.zero_()
            mlp[2].weight.copy_(torch.tensor([[1.0, 0.0, -1.0, 0.0]]))
    # Box x1 = 0.25 * 2 cells = 0.5 cell = 8 px; first pixel centre 8 px;
    # second pixel centre 24 px -> dx1 = -16; the MLP returns dx1.
    box = torch.tensor([[[0.5, 0.5, 0.5, 1.0]]])
    _, rpe_x = rpb(box, (1, 2), STRIDE)
    torch.testing.assert_close(rpe_x[0, 0, 0], torch.tensor([0.0, -16.0]))
    rpb.delta_mode = 'abs_log8'
    _, rpe_x = rpb(box, (1, 2), STRIDE)
    expected = -math.log2(17) / 3
    torch.testing.assert_close(rpe_x[0, 0, 0], torch.tensor([0.0, expected]))


def test_key_equal_value_is_plain_detr_box_rpb_cross_attention():
    torch.manual_seed(0)
    layer = IndirectAttention(C, HEADS, rpb_hidden_dims=16)
    query, src, pos, _, query_pos = _tokens()
    boxes = _boxes()
    mask = torch.zeros(B, H * W, dtype=torch.bool)
    mask[1, -W:] = True  # last row of sample 1 is padding
    out = layer(
        query,
        src,
        src,
        (H, W),
        STRIDE,
        query_pos=query_pos,
        key_pos=pos,
        reference_boxes=boxes,
        key_padding_mask=mask,
        value_padding_mask=mask,
    )
    bias = plain_detr_rpb(
        layer.box_rpb.x_mlp, layer.box_rpb.y_mlp, boxes, H, W, STRIDE, 'linear'
    )
    # Plain-DETR: k = src + pos, v = src.
    ref = explicit_attention(
        layer, query + query_pos, src + pos, src, bias, mask
    )
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_fused_path_equals_explicit_softmax_with_distinct_sources():
    torch.manual_seed(0)
    layer = IndirectAttention(C, HEADS, rpb_hidden_dims=16)
    query, exemplar, exemplar_pos, target, query_pos = _tokens(seed=1)
    target_pos = torch.randn_like(target)
    boxes = _boxes(seed=1)
    out = layer(
        query,
        exemplar,
        target,
        (H, W),
        STRIDE,
        query_pos=query_pos,
        key_pos=exemplar_pos,
        value_pos=target_pos,
        reference_boxes=boxes,
    )
    bias = plain_detr_rpb(
        layer.box_rpb.x_mlp, layer.box_rpb.y_mlp, boxes, H, W, STRIDE, 'linear'
    )
    ref = explicit_attention(
        layer,
        query + query_pos,
        exemplar + exemplar_pos,
        target + target_pos,
        bias,
        None,
    )
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_cell_is_masked_only_where_both_images_are_padding():
    torch.manual_seed(0)
    layer = IndirectAttention(C, HEADS, use_box_rpb=False)
    query, exemplar, _, target, _ = _tokens(seed=2)
    grid = torch.arange(H * W).view(H, W)
    target_pad = (grid % W >= W - 2).flatten()[None].repeat(B, 1)
    exemplar_pad = (grid // W >= H - 1).flatten()[None].repeat(B, 1)
    out = layer(
        query,
        exemplar,
        target,
        (H, W),
        key_padding_mask=exemplar_pad,
        value_padding_mask=target_pad,
    )
    ref = explicit_attention(
        layer, query, exemplar, target, None, exemplar_pad & target_pad
    )
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # A cell padded in one image only still contributes ...
    only_target = (target_pad & ~exemplar_pad)[0].nonzero()[0, 0]
    changed = target.clone()
    changed[:, only_target] += 10.0
    out2 = layer(
        query,
        exemplar,
        changed,
        (H, W),
        key_padding_mask=exemplar_pad,
        value_padding_mask=target_pad,
    )
    assert not torch.allclose(out, out2)
    # ... and a cell padded in both does not.
    both = (target_pad & exemplar_pad)[0].nonzero()[0, 0]
    changed = target.clone()
    changed[:, both] += 10.0
    out3 = layer(
        query,
        exemplar,
        changed,
        (H, W),
        key_padding_mask=exemplar_pad,
        value_padding_mask=target_pad,
    )
    torch.testing.assert_close(out, out3)


def test_gradients_reach_every_parameter_and_input():
    layer = IndirectAttention(C, HEADS, rpb_hidden_dims=16)
    tokens = [t.requires_grad_(True) for t in _tokens()]
    query, exemplar, exemplar_pos, target, query_pos = tokens
    boxes = _boxes().requires_grad_(True)
    out = layer(
        query,
        exemplar,
        target,
        (H, W),
        STRIDE,
        query_pos=query_pos,
        key_pos=exemplar_pos,
        reference_boxes=boxes,
    )
    out.square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for t in [*tokens, boxes]:
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_misaligned_attention_has_no_bias_parameters():
    layer = IndirectAttention(C, HEADS, use_box_rpb=False)
    assert layer.box_rpb is None
    assert not any('rpb' in name for name, _ in layer.named_parameters())


def test_contract_violations_raise():
    layer = IndirectAttention(C, HEADS, rpb_hidden_dims=16)
    query, exemplar, _, target, _ = _tokens()
    with pytest.raises(ValueError, match='same padded grid'):
        layer(
            query, exemplar[:, :-1], target, (H, W), reference_boxes=_boxes()
        )
    with pytest.raises(ValueError, match='same padded grid'):
        layer(query, exemplar, target, (H, W + 1), reference_boxes=_boxes())
    with pytest.raises(ValueError, match='reference_boxes'):
        layer(query, exemplar, target, (H, W))
    with pytest.raises(ValueError, match='boxes must have shape'):
        layer(
            query, exemplar, target, (H, W), reference_boxes=_boxes()[..., :2]
        )
    with pytest.raises(ValueError, match='delta_mode'):
        BoxRelativePositionBias(HEADS, delta_mode='log')


def test_chunked_mlp_matches_the_plain_mlp_values_and_gradients():
    from xattn_mm.core.box_rpb import _ChunkedMLP, _run_mlp

    torch.manual_seed(0)
    rpb = BoxRelativePositionBias(HEADS, hidden_dims=16).double()
    x = (torch.randn(3, 7, 5, 2, dtype=torch.float64) * 20).requires_grad_()
    ours = _run_mlp(rpb.x_mlp, x)
    grads = torch.autograd.grad(
        ours.square().sum(), [x, *rpb.x_mlp.parameters()]
    )
    plain = rpb.x_mlp(x)
    expected = torch.autograd.grad(
        plain.square().sum(), [x, *rpb.x_mlp.parameters()]
    )
    torch.testing.assert_close(ours, plain)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e)
    # Several chunks, one partial.
    w1, b1 = rpb.x_mlp[0].weight, rpb.x_mlp[0].bias
    w2 = rpb.x_mlp[2].weight
    assert torch.autograd.gradcheck(
        lambda *t: _ChunkedMLP.apply(*t, 4),
        (x.detach()[0, 0].requires_grad_(), w1, b1, w2),
    )


def test_chunked_mlp_under_no_grad():
    rpb = BoxRelativePositionBias(HEADS, hidden_dims=16)
    with torch.no_grad():
        rpe_y, rpe_x = rpb(_boxes(), (H, W), STRIDE)
    dense = plain_detr_rpb(
        rpb.x_mlp, rpb.y_mlp, _boxes(), H, W, STRIDE, 'linear'
    )
    torch.testing.assert_close(
        expand_axial_bias(rpe_y, rpe_x), dense, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize('use_box_rpb', [True, False])
def test_logit_terms_rebuild_the_fused_output(use_box_rpb):
    torch.manual_seed(0)
    layer = IndirectAttention(
        C, HEADS, use_box_rpb=use_box_rpb, rpb_hidden_dims=16
    )
    query, exemplar, exemplar_pos, target, query_pos = _tokens(seed=3)
    target_pos = torch.randn_like(target)
    grid = torch.arange(H * W).view(H, W)
    pad = (grid % W >= W - 2).flatten()[None].repeat(B, 1)
    key_pad = (grid // W >= H - 1).flatten()[None].repeat(B, 1)
    kwargs = dict(
        query_pos=query_pos,
        key_pos=exemplar_pos,
        value_pos=target_pos,
        reference_boxes=_boxes(seed=3),
        key_padding_mask=key_pad,
        value_padding_mask=pad,
    )
    out = layer(query, exemplar, target, (H, W), STRIDE, **kwargs)
    terms = layer.logit_terms(
        query, exemplar, target, (H, W), STRIDE, **kwargs
    )
    assert terms['content'].shape == (B, HEADS, Q, H * W)
    assert (terms['bias'] is None) != use_box_rpb
    # Only cells padded in both images are left out.
    both = key_pad & pad
    assert torch.equal(terms['valid'], ~both)
    weights = terms['weights']
    assert (weights[..., both[0]] == 0).all()
    assert (weights[..., (pad & ~both)[0]] > 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, HEADS, Q))
    # The weights times the projected values give the fused path's output.
    attn = layer.attn
    v = attn.v_proj(target + target_pos).unflatten(-1, (HEADS, -1))
    mixed = (weights @ v.transpose(1, 2)).transpose(1, 2).flatten(2)
    torch.testing.assert_close(attn.out_proj(mixed), out, atol=1e-5, rtol=1e-5)


# Measured on CPU autocast (relative L2 error against float32, output /
# gradients of a fixed random projection), with and without BoxRPB: fp16
# 8.0e-4 / 1.5e-3 and 8.7e-4 / 9.9e-4, bf16 8.9e-3 / 1.1e-2 and
# 8.1e-3 / 7.4e-3.
AMP_TOLERANCE = {torch.float16: 5e-3, torch.bfloat16: 4e-2}


@pytest.mark.parametrize('dtype', AMP_DTYPES)
@pytest.mark.parametrize('use_box_rpb', [True, False])
def test_autocast_matches_float32(dtype, use_box_rpb):
    torch.manual_seed(0)
    layer = IndirectAttention(C, HEADS, use_box_rpb, rpb_hidden_dims=16)
    query, key, value, pos, query_pos = _tokens()
    padding = torch.zeros(B, H * W, dtype=torch.bool)
    padding[1, 10:] = True

    def run(layer):
        return layer(
            query,
            key,
            value,
            (H, W),
            STRIDE,
            query_pos=query_pos,
            key_pos=pos,
            reference_boxes=_boxes(),
            key_padding_mask=padding,
            value_padding_mask=padding,
        )

    errors = autocast_parity(layer, run, dtype)
    assert errors['finite']
    assert errors['output'] < AMP_TOLERANCE[dtype], errors
    assert errors['grad'] < AMP_TOLERANCE[dtype], errors
    if use_box_rpb:  # by design in float32, whatever the autocast state
        with torch.autocast('cpu', dtype=dtype):
            rpe_y, rpe_x = layer.box_rpb(_boxes(), (H, W), STRIDE)
        assert rpe_y.dtype == rpe_x.dtype == torch.float32


def test_non_finite_reference_boxes_are_an_error():
    layer = IndirectAttention(C, HEADS, rpb_hidden_dims=16)
    query, src, _, _, _ = _tokens()
    boxes = _boxes()
    boxes[0, 0, 2] = float('nan')
    with pytest.raises(RuntimeError, match='reference_boxes hold NaN'):
        layer(query, src, src, (H, W), STRIDE, reference_boxes=boxes)
