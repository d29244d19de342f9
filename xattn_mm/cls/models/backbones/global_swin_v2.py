"""Swin Transformer V2 with global-attention blocks, the backbone of
Plain-DETR and IA-DETR (their ``swin_v2_*_2global`` variants)."""

import math
from functools import lru_cache
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmpretrain.models.backbones import SwinTransformerV2
from mmpretrain.models.utils.attention import ShiftWindowMSA, WindowMSAV2
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from xattn_mm.core import multihead_attention

_RELATIVE_BUFFERS = ('relative_coords_table', 'relative_position_index')


def log_spaced_coords(
    height: int, width: int, pretrained_size: Tuple[int, int]
) -> Tensor:
    """Swin V2's log-spaced relative coordinates for a ``height`` x
    ``width`` window, normalised by the pretraining window size (or by the
    window itself when ``pretrained_size`` is 0).

    Returns:
        Tensor: (2 * height - 1, 2 * width - 1, 2) coordinates, ±1 at the
        pretraining window's edge.
    """
    rows = torch.arange(1 - height, height, dtype=torch.float32)
    cols = torch.arange(1 - width, width, dtype=torch.float32)
    ph, pw = pretrained_size
    rows = rows / ((ph if ph > 0 else height) - 1 or 1)
    cols = cols / ((pw if pw > 0 else width) - 1 or 1)
    table = torch.stack(torch.meshgrid(rows, cols, indexing='ij'), -1) * 8
    return torch.sign(table) * torch.log2(table.abs() + 1) / 3  # log2(8)


def relative_index(height: int, width: int) -> Tensor:
    """(N, N) index into the flattened (2h - 1, 2w - 1) table for the N =
    h * w tokens of a window, in row-major token order."""
    ys, xs = torch.meshgrid(
        torch.arange(height), torch.arange(width), indexing='ij'
    )
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None] + height - 1
    dx = xs[:, None] - xs[None] + width - 1
    return dy * (2 * width - 1) + dx


@lru_cache(maxsize=32)
def _device_tables(
    height: int,
    width: int,
    pretrained_size: Tuple[int, int],
    device: torch.device,
) -> Tuple[Tensor, Tensor]:
    """:func:`log_spaced_coords` and :func:`relative_index` on ``device``,
    built once per map size: the hot path copies nothing from the host."""
    return (
        log_spaced_coords(height, width, pretrained_size).to(device),
        relative_index(height, width).to(device),
    )


class GlobalMSAV2(nn.Module):
    """Swin V2 cosine attention over the whole feature map: the parameters of
    :class:`~mmpretrain.models.utils.attention.WindowMSAV2` (``qkv``,
    ``q_bias``, ``v_bias``, ``logit_scale``, ``cpb_mlp``, ``proj``), with
    the continuous position bias evaluated for the map's own size on every
    call, no shift, no padding and no window mask.

    Args:
        embed_dims (int): Channels.
        num_heads (int): Attention heads.
        pretrained_window_size (tuple[int, int]): Normaliser of the relative
            coordinates (the pretraining window); 0 uses the map size.
        qkv_bias (bool): Learn q and v biases. Defaults to True.
        attn_drop (float): Dropout on the attention weights. Defaults to 0.
        proj_drop (float): Dropout after the projection. Defaults to 0.
        cpb_mlp_hidden_dims (int): Hidden channels of the position bias MLP.
            Defaults to 512.
    """

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        pretrained_window_size: Tuple[int, int],
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        cpb_mlp_hidden_dims: int = 512,
    ) -> None:
        super().__init__()
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.pretrained_window_size = tuple(pretrained_window_size)
        self.attn_drop = attn_drop
        self.cpb_mlp = nn.Sequential(
            nn.Linear(2, cpb_mlp_hidden_dims),
            nn.ReLU(inplace=True),
            nn.Linear(cpb_mlp_hidden_dims, num_heads, bias=False),
        )
        self.logit_scale = nn.Parameter(
            torch.full((num_heads, 1, 1), math.log(10.0))
        )
        self.qkv = nn.Linear(embed_dims, 3 * embed_dims, bias=False)
        self.q_bias = (
            nn.Parameter(torch.zeros(embed_dims)) if qkv_bias else None
        )
        self.v_bias = (
            nn.Parameter(torch.zeros(embed_dims)) if qkv_bias else None
        )
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def position_bias(self, height: int, width: int) -> Tensor:
        """(heads, N, N) bias ``16 * sigmoid(cpb_mlp(coords))``."""
        coords, index = _device_tables(
            height, width, self.pretrained_window_size, self.logit_scale.device
        )
        coords = coords.to(self.cpb_mlp[0].weight.dtype)
        bias = self.cpb_mlp(coords).flatten(0, 1)[index]
        return 16 * torch.sigmoid(bias.permute(2, 0, 1))

    def forward(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        """x: (B, H * W, C) tokens in row-major order."""
        return cosine_attention(self, x, self.position_bias(*hw_shape)[None])


class CosineWindowMSAV2(WindowMSAV2):
    """mmpretrain's :class:`WindowMSAV2` (same parameters, buffers and
    results in float32) computed by :func:`cosine_attention`: one fused
    ``scaled_dot_product_attention`` call instead of the materialised
    softmax, and under autocast no NaN where a window holds padding.

    The host normalises the fp16 keys with ``F.normalize``, whose 1e-12
    floor is 0 in fp16: the all-zero keys of ``pad_small_map`` or of a
    padded border window become 0 / 0 and the whole window NaN.
    """

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            x (Tensor): Windows of tokens, shape (num_windows * B, N, C).
            mask (Tensor, optional): Shift mask (num_windows, N, N) with
                values in (-inf, 0]. Defaults to None.
        """
        tokens = x.shape[1]
        table = self.cpb_mlp(self.relative_coords_table).flatten(0, -2)
        index = self.relative_position_index.view(-1)
        bias = (
            16
            * torch.sigmoid(
                table[index].view(tokens, tokens, -1).permute(2, 0, 1)
            )[None]
        )
        if mask is not None:
            windows = mask.shape[0]
            bias = (bias + mask[:, None]).repeat(
                x.shape[0] // windows, 1, 1, 1
            )
        return cosine_attention(self, x, bias)


def _unit(t: Tensor) -> Tensor:
    """``t`` / its L2 norm over the last dim in float32, returned in ``t``'s
    dtype: ``F.normalize`` (norm floored at 1e-12), except that an all-zero
    vector (padding) is divided by 1. Its value stays 0, and its gradient is
    the incoming one instead of ``F.normalize``'s 1e12 times it, which
    overflows fp16 and turns the weight gradient ``0 * inf`` into NaN."""
    t32 = t.float()
    norm = t32.norm(dim=-1, keepdim=True)
    norm = torch.where(norm > 0, norm.clamp_min(1e-12), torch.ones_like(norm))
    return (t32 / norm).to(t.dtype)


def cosine_attention(
    msa: nn.Module, x: Tensor, position_bias: Tensor
) -> Tensor:
    """Swin V2 scaled cosine attention with the parameters of a
    :class:`WindowMSAV2`-like module ``msa`` (``qkv``, ``q_bias``,
    ``v_bias``, ``logit_scale``, ``num_heads``, ``attn_drop``, ``proj``,
    ``proj_drop``).

    The queries and keys are normalised in float32 (the cosine of an
    all-zero padding token is 0, not NaN, under fp16 autocast); the product
    runs in :func:`~xattn_mm.core.multihead_attention`, the bias being an
    additive float mask (the memory-efficient kernel on CUDA).

    Args:
        msa (nn.Module): The attention module holding the parameters.
        x (Tensor): Tokens, shape (B, N, C).
        position_bias (Tensor): Additive logit bias broadcastable to
            (B, num_heads, N, N).

    Returns:
        Tensor: Projected output, shape (B, N, C).
    """
    batch, tokens, _ = x.shape
    bias = None
    if msa.q_bias is not None:
        bias = torch.cat(
            [msa.q_bias, torch.zeros_like(msa.v_bias), msa.v_bias]
        )
    q, k, v = F.linear(x, msa.qkv.weight, bias).chunk(3, -1)
    q, k = (_unit(t.view(batch, tokens, msa.num_heads, -1)) for t in (q, k))
    # Cosine logits times a per-head scale, carried by the query (the
    # attention's own 1 / sqrt(head dims) is replaced by 1).
    scale = msa.logit_scale.clamp(max=math.log(100.0)).exp().view(-1, 1)
    drop = (
        msa.attn_drop
        if isinstance(msa.attn_drop, float)
        else (msa.attn_drop.p)
    )
    out = multihead_attention(
        (q * scale).flatten(2),
        k.flatten(2),
        v,
        msa.num_heads,
        attn_bias=position_bias,
        dropout_p=drop if msa.training else 0.0,
        scale=1.0,
    )
    return msa.proj_drop(msa.proj(out))


class GlobalMSA(BaseModule):
    """Drop-in for :class:`ShiftWindowMSA` in a Swin V2 block: ``w_msa`` is
    a :class:`GlobalMSAV2` (so checkpoint keys keep the window blocks'
    names) and ``drop`` the block's residual dropout."""

    def __init__(self, w_msa: GlobalMSAV2, drop: nn.Module) -> None:
        super().__init__()
        self.w_msa = w_msa
        self.drop = drop

    def forward(self, query: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        if query.shape[1] != hw_shape[0] * hw_shape[1]:
            raise ValueError(
                f'{query.shape[1]} tokens do not fill a {hw_shape} map.'
            )
        return self.drop(self.w_msa(query, hw_shape))


@MODELS.register_module()
class GlobalSwinTransformerV2(SwinTransformerV2):
    """:class:`~mmpretrain.models.backbones.SwinTransformerV2` in which
    chosen blocks attend over the whole feature map instead of shifted
    windows, as Plain-DETR's and IA-DETR's ``swin_v2_*_2global`` backbones
    (every block of the last stage global).

    The window blocks compute mmpretrain's attention through
    :class:`CosineWindowMSAV2` (fused, fp16-safe). Their relative-position
    buffers are recomputed from
    the window size (as mmpretrain does on load) and are not saved, so
    checkpoints load strictly.

    Args:
        global_blocks (Sequence[Sequence[int]], optional): For each stage,
            the indices of its global blocks (negative indices count from
            the end). Defaults to None: every block of the last stage.
        *args, **kwargs: :class:`SwinTransformerV2` arguments.
    """

    def __init__(
        self,
        *args,
        global_blocks: Optional[Sequence[Sequence[int]]] = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        stages = self.stages
        if global_blocks is None:
            global_blocks = [()] * (len(stages) - 1) + [
                range(len(stages[-1].blocks))
            ]
        if len(global_blocks) != len(stages):
            raise ValueError(
                f'global_blocks needs one entry per stage ({len(stages)}), '
                f'got {len(global_blocks)}.'
            )
        pretrained = kwargs.get('pretrained_window_sizes', [0] * len(stages))
        for i, (stage, indices) in enumerate(zip(stages, global_blocks)):
            for j in indices:
                if not -len(stage.blocks) <= j < len(stage.blocks):
                    raise ValueError(
                        f'global_blocks[{i}] has block {j}, but stage {i} '
                        f'has {len(stage.blocks)} blocks.'
                    )
                block = stage.blocks[j]
                if not isinstance(block.attn, ShiftWindowMSA):
                    continue  # listed twice
                window = block.attn.w_msa
                size = pretrained[i]
                block.attn = GlobalMSA(
                    GlobalMSAV2(
                        window.embed_dims,
                        window.num_heads,
                        (size, size),
                        qkv_bias=window.q_bias is not None,
                        attn_drop=window.attn_drop.p,
                        proj_drop=window.proj_drop.p,
                        cpb_mlp_hidden_dims=window.cpb_mlp[0].out_features,
                    ),
                    block.attn.drop,
                )
        for module in self.modules():
            if type(module) is WindowMSAV2:
                # Same parameters and buffers, fp16-safe fused forward.
                module.__class__ = CosineWindowMSAV2
            for name in _RELATIVE_BUFFERS:
                if name in module._buffers:
                    buffer = module._buffers.pop(name)
                    module.register_buffer(name, buffer, persistent=False)
