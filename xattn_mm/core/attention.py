"""Multi-head attention with separate key and value sources.

Every method in xattn_mm computes its attention here: the keys and the values
may come from different token sets (IA-DETR takes keys from the exemplar and
values from the target), an additive per-head bias may be added to the logits
(BoxRPB), and padded keys may be masked. The product runs through
:func:`torch.nn.functional.scaled_dot_product_attention`, which picks its
kernel from the inputs and the device (see :func:`multihead_attention`).
"""

from typing import Optional

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype matrix products on ``x`` run in: autocast's lower
    precision where autocast is on for ``x``'s device, else ``x.dtype``."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def _check_broadcastable(name: str, tensor: Tensor, target: tuple) -> None:
    """Raise unless ``tensor`` broadcasts to ``target`` = (B, h, Nq, Nk)
    with no more than four dimensions."""
    shape = tuple(tensor.shape)
    if not 2 <= len(shape) <= 4 or any(
        s not in (1, t) for s, t in zip(shape[::-1], target[::-1])
    ):
        raise ValueError(
            f'{name} of shape {shape} does not broadcast to (batch, '
            f'num_heads, num_queries, num_keys) = {target}; expected 2 to 4 '
            'dimensions, each 1 or equal to the target size.'
        )


def multihead_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    num_heads: int,
    attn_bias: Optional[Tensor] = None,
    attn_mask: Optional[Tensor] = None,
    key_padding_mask: Optional[Tensor] = None,
    dropout_p: float = 0.0,
    scale: Optional[float] = None,
) -> Tensor:
    """Scaled dot-product attention over heads, on projected inputs.

    Key ``j`` and value ``j`` are paired only by their index, so ``key`` and
    ``value`` must hold the same number of tokens but may come from different
    sources. Query rows whose every key is masked attend to nothing and
    output zeros (no NaN in the forward or the backward pass).

    Kernels: without bias or masks, SDPA may take its flash kernel (CUDA,
    fp16/bf16; also the CPU's flash kernel). A bias or mask becomes one
    additive float mask in the compute dtype (the query's, or autocast's),
    built without a host-device sync: CUDA serves it with the
    memory-efficient kernel, which also returns the bias gradient; the CPU
    flash kernel takes a mask that needs no gradient, and a learnable bias
    (BoxRPB, Swin V2's position bias) runs SDPA's math path there.

    Args:
        query (Tensor): Projected queries, shape (B, Nq, C).
        key (Tensor): Projected keys, shape (B, Nk, C).
        value (Tensor): Projected values, shape (B, Nk, Cv).
        num_heads (int): Number of heads; divides C and Cv.
        attn_bias (Tensor, optional): Float bias added to the logits,
            broadcastable to (B, num_heads, Nq, Nk). Defaults to None.
        attn_mask (Tensor, optional): Bool mask broadcastable to
            (B, num_heads, Nq, Nk); True blocks a query-key pair.
            Defaults to None.
        key_padding_mask (Tensor, optional): Bool mask of shape (B, Nk);
            True marks a padded key. Defaults to None.
        dropout_p (float): Dropout on the attention weights; pass 0 at
            inference. Defaults to 0.0.
        scale (float, optional): Factor on the logits. Defaults to None
            (1 / sqrt(head dims)); cosine attention passes 1 and scales the
            normalised queries itself.

    Returns:
        Tensor: Attention output before the output projection, shape
        (B, Nq, Cv).
    """
    for name, t in (('query', query), ('key', key), ('value', value)):
        if t.dim() != 3:
            raise ValueError(
                f'{name} must have shape (batch, tokens, '
                f'channels), got {tuple(t.shape)}.'
            )
    batch, num_queries, channels = query.shape
    num_keys = key.shape[1]
    if key.shape[0] != batch or value.shape[0] != batch:
        raise ValueError(
            'query, key and value must share the batch size, got '
            f'{batch}, {key.shape[0]} and {value.shape[0]}.'
        )
    if value.shape[1] != num_keys:
        raise ValueError(
            f'key has {num_keys} tokens but value has {value.shape[1]}: key j '
            'and value j are paired by index, so both must have the same '
            'length (pad them onto the same grid).'
        )
    if key.shape[2] != channels:
        raise ValueError(
            f'key has {key.shape[2]} channels, query has '
            f'{channels}; they must match.'
        )
    for name, dims in (('query/key', channels), ('value', value.shape[2])):
        if dims % num_heads:
            raise ValueError(
                f'{name} channels ({dims}) must be divisible '
                f'by num_heads ({num_heads}).'
            )
    target = (batch, num_heads, num_queries, num_keys)

    blocked = None
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool or tuple(
            key_padding_mask.shape
        ) != (batch, num_keys):
            raise ValueError(
                'key_padding_mask must be a bool tensor of shape (batch, '
                f'num_keys) = {(batch, num_keys)}, got '
                f'{key_padding_mask.dtype} {tuple(key_padding_mask.shape)}.'
            )
        blocked = key_padding_mask[:, None, None, :]
    if attn_mask is not None:
        if attn_mask.dtype != torch.bool:
            raise ValueError(
                'attn_mask must be a bool tensor (True blocks), '
                f'got {attn_mask.dtype}.'
            )
        _check_broadcastable('attn_mask', attn_mask, target)
        blocked = attn_mask if blocked is None else blocked | attn_mask
    if attn_bias is not None:
        if not attn_bias.is_floating_point():
            raise ValueError(
                f'attn_bias must be a float tensor, got {attn_bias.dtype}.'
            )
        _check_broadcastable('attn_bias', attn_bias, target)

    dtype = compute_dtype(query)
    mask = None if attn_bias is None else attn_bias.to(dtype)
    empty_rows = None
    if blocked is not None:
        while blocked.dim() < 4:
            blocked = blocked.unsqueeze(0)
        # A row with every key blocked would softmax over -inf only (NaN);
        # unblock it for the kernel and zero its output afterwards, always
        # (a data-dependent branch would sync with the device).
        empty_rows = blocked.all(dim=-1, keepdim=True)
        blocked = blocked & ~empty_rows
        mask = torch.where(
            blocked,
            torch.tensor(float('-inf'), dtype=dtype, device=query.device),
            torch.tensor(0.0, dtype=dtype, device=query.device)
            if mask is None
            else mask,
        )

    def split(t: Tensor) -> Tensor:
        return t.unflatten(-1, (num_heads, -1)).transpose(1, 2)

    out = F.scaled_dot_product_attention(
        split(query),
        split(key),
        split(value),
        attn_mask=mask,
        dropout_p=dropout_p,
        scale=scale,
    )
    if empty_rows is not None:
        out = out.masked_fill(empty_rows, 0.0)
    return out.transpose(1, 2).flatten(2)


class MultiheadAttention(BaseModule):
    """Multi-head attention whose keys and values have separate sources.

    Unlike :class:`torch.nn.MultiheadAttention` (and mmcv's wrapper of it),
    key ``j`` and value ``j`` need only share an index: IA-DETR's indirect
    attention takes the keys from the exemplar image and the values from the
    target image. An additive per-head bias (e.g. BoxRPB) and masks are
    optional. Inputs are batch first.

    Args:
        embed_dims (int): Query (and output) channels C.
        num_heads (int): Number of heads; divides ``embed_dims``.
        key_dims (int, optional): Key input channels. Defaults to
            ``embed_dims``.
        value_dims (int, optional): Value input channels. Defaults to
            ``embed_dims``.
        attn_drop (float): Dropout on the attention weights. Defaults to 0.
        proj_drop (float): Dropout after the output projection.
            Defaults to 0.
        bias (bool): Whether the projections have biases. Defaults to True.
        init_cfg (dict or list[dict], optional): Initialisation config.
            Defaults to None (Xavier-uniform projections, zero biases).
    """

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        key_dims: Optional[int] = None,
        value_dims: Optional[int] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        bias: bool = True,
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if not isinstance(embed_dims, int) or embed_dims <= 0:
            raise ValueError(
                f'embed_dims must be a positive int, got {embed_dims!r}.'
            )
        if not isinstance(num_heads, int) or num_heads <= 0:
            raise ValueError(
                f'num_heads must be a positive int, got {num_heads!r}.'
            )
        if embed_dims % num_heads:
            raise ValueError(
                f'embed_dims ({embed_dims}) must be divisible '
                f'by num_heads ({num_heads}).'
            )
        for name, p in (('attn_drop', attn_drop), ('proj_drop', proj_drop)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f'{name} must be in [0, 1), got {p!r}.')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.q_proj = nn.Linear(embed_dims, embed_dims, bias=bias)
        self.k_proj = nn.Linear(key_dims or embed_dims, embed_dims, bias=bias)
        self.v_proj = nn.Linear(
            value_dims or embed_dims, embed_dims, bias=bias
        )
        self.out_proj = nn.Linear(embed_dims, embed_dims, bias=bias)
        self.proj_drop = nn.Dropout(proj_drop)
        self._init_projections()

    def _init_projections(self) -> None:
        for layer in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def init_weights(self) -> None:
        """Xavier-uniform projections unless ``init_cfg`` says otherwise."""
        if self.init_cfg is None:
            self._init_projections()
        else:
            super().init_weights()

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attn_bias: Optional[Tensor] = None,
        attn_mask: Optional[Tensor] = None,
        key_padding_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """Attend from ``query`` to ``key`` and read ``value``.

        Args:
            query (Tensor): Shape (B, Nq, C); add positions before calling.
            key (Tensor): Shape (B, Nk, key_dims).
            value (Tensor): Shape (B, Nk, value_dims).
            attn_bias (Tensor, optional): Float, broadcastable to
                (B, num_heads, Nq, Nk). Defaults to None.
            attn_mask (Tensor, optional): Bool, broadcastable to
                (B, num_heads, Nq, Nk); True blocks. Defaults to None.
            key_padding_mask (Tensor, optional): Bool (B, Nk); True marks
                padding. Defaults to None.

        Returns:
            Tensor: Shape (B, Nq, C).
        """
        out = multihead_attention(
            self.q_proj(query),
            self.k_proj(key),
            self.v_proj(value),
            self.num_heads,
            attn_bias=attn_bias,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            dropout_p=self.attn_drop if self.training else 0.0,
        )
        return self.proj_drop(self.out_proj(out))
