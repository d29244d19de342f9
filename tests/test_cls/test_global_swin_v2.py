import pytest
import torch
from mmengine.registry import init_default_scope
from mmpretrain.models.utils.attention import WindowMSAV2
from mmpretrain.registry import MODELS

import xattn_mm.cls  # noqa: F401
from xattn_mm.cls.models.backbones.global_swin_v2 import (
    CosineWindowMSAV2,
    GlobalMSA,
    GlobalMSAV2,
)
from xattn_mm.testing.amp import AMP_DTYPES, autocast_parity


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    init_default_scope('mmpretrain')


def tiny(**kwargs):
    cfg = dict(
        type='GlobalSwinTransformerV2',
        arch=dict(
            embed_dims=16,
            depths=[2, 2, 2, 2],
            num_heads=[1, 2, 2, 4],
            extra_norm_every_n_blocks=0,
        ),
        window_size=4,
        pretrained_window_sizes=[4, 4, 4, 2],
        out_indices=(2, 3),
        pad_small_map=True,
    )
    cfg.update(kwargs)
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


@pytest.mark.parametrize('pretrained', [(0, 0), (3, 3)])
def test_global_attention_is_window_attention_over_the_whole_map(pretrained):
    # A window that covers the map exactly, unshifted, is global attention.
    torch.manual_seed(0)
    window = WindowMSAV2(32, (4, 5), 4, pretrained_window_size=pretrained)
    with torch.no_grad():
        for p in window.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    ours = GlobalMSAV2(32, 4, pretrained)
    missing = ours.load_state_dict(window.state_dict(), strict=False)
    assert set(missing.unexpected_keys) == {
        'relative_coords_table',
        'relative_position_index',
    }
    assert missing.missing_keys == []
    x = torch.randn(3, 20, 32)
    torch.testing.assert_close(
        ours(x, (4, 5)), window(x), atol=1e-5, rtol=1e-5
    )


def test_default_makes_the_last_stage_global():
    model = tiny()
    kinds = [
        [type(block.attn).__name__ for block in stage.blocks]
        for stage in model.stages
    ]
    assert kinds[:3] == [['ShiftWindowMSA'] * 2] * 3
    assert kinds[3] == ['GlobalMSA', 'GlobalMSA']
    attn = model.stages[3].blocks[0].attn.w_msa
    assert attn.pretrained_window_size == (2, 2)
    chosen = tiny(global_blocks=[[], [-1], [], []])
    assert isinstance(chosen.stages[1].blocks[1].attn, GlobalMSA)
    assert not isinstance(chosen.stages[3].blocks[0].attn, GlobalMSA)


def test_global_block_sees_the_whole_map():
    attn = tiny().stages[3].blocks[0].attn.eval()
    x = torch.randn(1, 6 * 7, 128)
    y = x.clone()
    y[:, 0] += 1.0  # top-left token
    with torch.no_grad():
        delta = (attn(x, (6, 7)) - attn(y, (6, 7)))[0, -1]
    assert delta.abs().max() > 1e-4  # reaches the bottom-right token


def test_odd_sizes_gradients_and_strict_round_trip():
    model = tiny()
    x = torch.randn(2, 3, 74, 122)
    outs = model(x)
    assert [o.shape for o in outs] == [(2, 64, 5, 8), (2, 128, 3, 4)]
    sum(o.sum() for o in outs).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    state = model.state_dict()
    assert not any('relative_' in k for k in state)
    other = tiny()
    other.load_state_dict(state, strict=True)
    model.eval()
    other.eval()
    with torch.no_grad():
        torch.testing.assert_close(other(x)[1], model(x)[1])


def test_bad_global_blocks():
    with pytest.raises(ValueError, match='one entry per stage'):
        tiny(global_blocks=[[0]])
    with pytest.raises(ValueError, match='stage 3 has 2 blocks'):
        tiny(global_blocks=[[], [], [], [2]])


def test_window_blocks_match_the_host_and_survive_fp16_padding():
    torch.manual_seed(0)
    host = WindowMSAV2(32, (4, 4), 4, pretrained_window_size=(3, 3))
    with torch.no_grad():
        for p in host.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    ours = CosineWindowMSAV2(32, (4, 4), 4, pretrained_window_size=(3, 3))
    ours.load_state_dict(host.state_dict())
    x = torch.randn(6, 16, 32)  # 2 images x 3 windows
    x[:, 12:] = 0  # padded tokens
    mask = torch.zeros(3, 16, 16)
    mask[1, :8, 8:] = mask[1, 8:, :8] = -100.0  # a shifted window
    for m in (None, mask):
        torch.testing.assert_close(ours(x, m), host(x, m))
    with torch.autocast('cpu', dtype=torch.float16):
        assert host(x, mask).isnan().any()  # the host's 0 / 0
        assert ours(x, mask).isfinite().all()
    assert all(
        type(block.attn.w_msa) is CosineWindowMSAV2
        for stage in tiny().stages[:3]
        for block in stage.blocks
    )


# Measured relative L2 errors against float32 (output, gradients):
# fp16 2.6e-3 / 5.3e-3, bf16 2.2e-2 / 4.4e-2.
TOLERANCE = {torch.float16: 2e-2, torch.bfloat16: 0.15}


@pytest.mark.parametrize('dtype', AMP_DTYPES)
def test_autocast_matches_float32(dtype):
    # 64 x 96 pads the 4 x 4 windows of the 4 x 6 stage-3 map.
    model = tiny()
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    errors = autocast_parity(
        model, lambda m: torch.cat([o.flatten() for o in m(x)]), dtype
    )
    assert errors['finite'], errors
    assert errors['output'] < TOLERANCE[dtype], errors
    assert errors['grad'] < TOLERANCE[dtype], errors
