import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xattn_mm.core import MultiheadAttention, multihead_attention
from xattn_mm.testing.amp import AMP_DTYPES


def reference_attention(
    query,
    key,
    value,
    num_heads,
    attn_bias=None,
    attn_mask=None,
    key_padding_mask=None,
):
    """Explicit-softmax attention; fully blocked rows output zeros."""
    b, nq, c = query.shape
    nk = key.shape[1]
    q = query.view(b, nq, num_heads, -1).transpose(1, 2)
    k = key.view(b, nk, num_heads, -1).transpose(1, 2)
    v = value.view(b, nk, num_heads, -1).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if attn_bias is not None:
        logits = logits + attn_bias
    blocked = torch.zeros_like(logits, dtype=torch.bool)
    if attn_mask is not None:
        blocked = blocked | attn_mask
    if key_padding_mask is not None:
        blocked = blocked | key_padding_mask[:, None, None, :]
    logits = logits.masked_fill(blocked, float('-inf'))
    empty = blocked.all(-1, keepdim=True)
    weights = torch.softmax(logits.masked_fill(empty, 0.0), dim=-1)
    out = (weights @ v).masked_fill(empty, 0.0)
    return out.transpose(1, 2).reshape(b, nq, -1)


def _inputs(b=2, nq=5, nk=7, c=16, cv=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, nq, c, generator=g),
        torch.randn(b, nk, c, generator=g),
        torch.randn(b, nk, cv, generator=g),
    )


@pytest.mark.parametrize('with_bias', [False, True])
@pytest.mark.parametrize('with_padding', [False, True])
@pytest.mark.parametrize('with_mask', [False, True])
def test_matches_explicit_softmax(with_bias, with_padding, with_mask):
    q, k, v = _inputs()
    heads = 4
    bias = torch.randn(2, heads, 5, 7) if with_bias else None
    padding = None
    if with_padding:
        padding = torch.zeros(2, 7, dtype=torch.bool)
        padding[0, 5:] = True
        padding[1, 2:4] = True
    mask = None
    if with_mask:
        mask = torch.rand(5, 7, generator=torch.Generator().manual_seed(1))
        mask = mask > 0.7
    out = multihead_attention(
        q,
        k,
        v,
        heads,
        attn_bias=bias,
        attn_mask=mask,
        key_padding_mask=padding,
    )
    ref = reference_attention(q, k, v, heads, bias, mask, padding)
    assert out.shape == (2, 5, 24)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_bias_broadcasts_over_batch_and_heads():
    q, k, v = _inputs()
    bias = torch.randn(5, 7)
    out = multihead_attention(q, k, v, 2, attn_bias=bias)
    ref = reference_attention(q, k, v, 2, bias[None, None])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_padding_changes_nothing_for_unpadded_keys():
    q, k, v = _inputs()
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[:, 4:] = True
    masked = multihead_attention(q, k, v, 4, key_padding_mask=padding)
    truncated = multihead_attention(q, k[:, :4], v[:, :4], 4)
    torch.testing.assert_close(masked, truncated, atol=1e-5, rtol=1e-5)


def test_equals_torch_multihead_attention_when_key_is_value():
    torch.manual_seed(0)
    ours = MultiheadAttention(32, 4)
    theirs = nn.MultiheadAttention(32, 4, batch_first=True)
    with torch.no_grad():
        theirs.in_proj_weight.copy_(
            torch.cat(
                [ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]
            )
        )
        theirs.in_proj_bias.copy_(
            torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias])
        )
        theirs.out_proj.weight.copy_(ours.out_proj.weight)
        theirs.out_proj.bias.copy_(ours.out_proj.bias)
    query = torch.randn(3, 6, 32)
    memory = torch.randn(3, 9, 32)
    padding = torch.zeros(3, 9, dtype=torch.bool)
    padding[1, 6:] = True
    mask = torch.zeros(6, 9, dtype=torch.bool)
    mask[0, :3] = True
    expected, _ = theirs(
        query,
        memory,
        memory,
        key_padding_mask=padding,
        attn_mask=mask,
        need_weights=False,
    )
    actual = ours(
        query, memory, memory, attn_mask=mask, key_padding_mask=padding
    )
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('dtype', [None, *AMP_DTYPES])
def test_fully_masked_rows_are_zero_and_gradients_finite(dtype, monkeypatch):
    attn = MultiheadAttention(16, 2)
    q, k, v = _inputs(cv=16)
    q.requires_grad_(True)
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[1] = True  # every key of sample 1 is padding
    mask = torch.zeros(5, 7, dtype=torch.bool)
    mask[2] = True  # query 2 may see no key at all
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(query, key, value, attn_mask=None, **kwargs):
        seen.append((query.dtype, attn_mask.dtype))
        return sdpa(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, 'scaled_dot_product_attention', spy)
    with torch.autocast('cpu', dtype=dtype, enabled=dtype is not None):
        out = attn(q, k, v, attn_mask=mask, key_padding_mask=padding)
    # The additive mask reaches the kernel in the query's compute dtype.
    assert seen == [((dtype or torch.float32),) * 2]
    assert torch.isfinite(out).all()
    # An empty row reads nothing: only the output projection's bias remains.
    tol = dict(atol=1e-2, rtol=1e-2) if dtype else {}
    bias = attn.out_proj.bias.to(out.dtype)
    torch.testing.assert_close(out[1], bias.expand(5, 16), **tol)
    torch.testing.assert_close(out[0, 2], bias, **tol)
    out.float().sum().backward()
    for p in [q, *attn.parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_gradients_reach_every_input_and_parameter():
    attn = MultiheadAttention(16, 4, key_dims=8, value_dims=12)
    q = torch.randn(2, 3, 16, requires_grad=True)
    k = torch.randn(2, 4, 8, requires_grad=True)
    v = torch.randn(2, 4, 12, requires_grad=True)
    bias = torch.randn(2, 4, 3, 4, requires_grad=True)
    attn(q, k, v, attn_bias=bias).square().sum().backward()
    for t in [q, k, v, bias, *attn.parameters()]:
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_attention_dropout_only_in_training():
    attn = MultiheadAttention(16, 2, attn_drop=0.5)
    q, k, v = _inputs(cv=16)
    attn.eval()
    torch.testing.assert_close(attn(q, k, v), attn(q, k, v))
    attn.train()
    torch.manual_seed(0)
    first = attn(q, k, v)
    assert not torch.allclose(first, attn(q, k, v))


def test_init_weights_resets_projections():
    attn = MultiheadAttention(16, 2)
    with torch.no_grad():
        attn.q_proj.bias.fill_(3.0)
    attn.init_weights()
    assert attn.q_proj.bias.abs().sum() == 0


@pytest.mark.parametrize(
    'kwargs, match',
    [
        (dict(embed_dims=10, num_heads=3), 'divisible by num_heads'),
        (dict(embed_dims=0, num_heads=1), 'embed_dims must be a positive int'),
        (dict(embed_dims=8, num_heads=0), 'num_heads must be a positive int'),
        (dict(embed_dims=8, num_heads=2, attn_drop=1.0), 'attn_drop'),
    ],
)
def test_invalid_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiheadAttention(**kwargs)


@pytest.mark.parametrize(
    'change, match',
    [
        (dict(value=torch.randn(2, 6, 24)), 'paired by index'),
        (dict(query=torch.randn(2, 5)), r'query must have shape'),
        (dict(key=torch.randn(3, 7, 16)), 'share the batch size'),
        (dict(key=torch.randn(2, 7, 12)), 'key has 12 channels'),
        (dict(value=torch.randn(2, 7, 10)), r'value channels \(10\)'),
        (dict(attn_bias=torch.randn(2, 3, 5, 7)), 'attn_bias of shape'),
        (dict(attn_bias=torch.ones(5, 7, dtype=torch.long)), 'float tensor'),
        (dict(attn_mask=torch.zeros(5, 7)), 'attn_mask must be a bool'),
        (dict(attn_mask=torch.zeros(5, 6, dtype=torch.bool)), 'attn_mask of'),
        (
            dict(key_padding_mask=torch.zeros(2, 6, dtype=torch.bool)),
            'key_padding_mask must be',
        ),
    ],
)
def test_invalid_inputs(change, match):
    q, k, v = _inputs()
    args = dict(query=q, key=k, value=v, num_heads=4)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        multihead_attention(**args)
