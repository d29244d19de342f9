"""Indirect attention (IA-DETR): keys from one image, values from another.

Queries attend with keys computed from the exemplar's tokens and read values
computed from the target's tokens. Both token sets lie on one padded canvas
(the exemplar pasted top-left onto the target's grid), so key ``j`` and value
``j`` share only a grid position. A BoxRPB bias from each query's reference
box (on the target) is added to the logits.
"""

from typing import Dict, Optional, Tuple

import torch
from mmengine.model import BaseModule
from torch import Tensor

from .attention import MultiheadAttention, compute_dtype
from .box_rpb import BoxRelativePositionBias, expand_axial_bias


def _with_pos(x: Tensor, pos: Optional[Tensor]) -> Tensor:
    return x if pos is None else x + pos


class IndirectAttention(BaseModule):
    """Multi-head attention with keys and values from two aligned grids.

    With ``key`` equal to ``value`` (and no value position) this is Plain-
    DETR's BoxRPB cross-attention; with ``use_box_rpb=False`` it is the
    "misaligned attention" ablation of IA-DETR.

    The BoxRPB MLPs run in float32 (also under autocast); their dense bias
    reaches ``scaled_dot_product_attention`` in the attention's compute
    dtype as an additive mask, which selects the memory-efficient kernel on
    CUDA (flash attention takes no mask; this one also returns the bias
    gradient) and SDPA's math path on the CPU (whose flash kernel computes
    no mask gradient).

    Args:
        embed_dims (int): Channels of queries, keys and values.
            Defaults to 256.
        num_heads (int): Number of heads. Defaults to 8.
        use_box_rpb (bool): Add the box-to-pixel bias. Defaults to True.
        rpb_hidden_dims (int): Hidden width of the BoxRPB MLPs.
            Defaults to 512.
        rpb_delta_mode (str): ``'linear'`` or ``'abs_log8'``.
            Defaults to ``'linear'``.
        attn_drop (float): Attention-weight dropout. Defaults to 0.
        proj_drop (float): Output dropout. Defaults to 0.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(
        self,
        embed_dims: int = 256,
        num_heads: int = 8,
        use_box_rpb: bool = True,
        rpb_hidden_dims: int = 512,
        rpb_delta_mode: str = 'linear',
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        init_cfg=None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        self.attn = MultiheadAttention(
            embed_dims, num_heads, attn_drop=attn_drop, proj_drop=proj_drop
        )
        self.box_rpb = (
            BoxRelativePositionBias(
                num_heads, rpb_hidden_dims, delta_mode=rpb_delta_mode
            )
            if use_box_rpb
            else None
        )

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        spatial_shape: Tuple[int, int],
        stride: float = 16.0,
        query_pos: Optional[Tensor] = None,
        key_pos: Optional[Tensor] = None,
        value_pos: Optional[Tensor] = None,
        reference_boxes: Optional[Tensor] = None,
        key_padding_mask: Optional[Tensor] = None,
        value_padding_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """Attend from the queries to the key grid, read the value grid.

        Args:
            query (Tensor): Object queries, shape (B, Q, C).
            key (Tensor): Key tokens (the exemplar), shape (B, H * W, C).
            value (Tensor): Value tokens (the target), shape (B, H * W, C),
                on the same grid as ``key``.
            spatial_shape (tuple[int, int]): The common grid (H, W).
            stride (float): Input pixels per grid cell (BoxRPB distances).
                Defaults to 16.
            query_pos (Tensor, optional): Shape (B, Q, C). Defaults to None.
            key_pos (Tensor, optional): Shape (B, H * W, C).
                Defaults to None.
            value_pos (Tensor, optional): Shape (B, H * W, C).
                Defaults to None.
            reference_boxes (Tensor, optional): (cx, cy, w, h) normalised
                to the grid, shape (B, Q, 4); required with BoxRPB.
                Defaults to None.
            key_padding_mask (Tensor, optional): Bool (B, H * W), True on
                the key image's padding. Defaults to None.
            value_padding_mask (Tensor, optional): Bool (B, H * W), True on
                the value image's padding. Defaults to None.

        Returns:
            Tensor: Shape (B, Q, C).
        """
        padding_mask, bias = self._mask_and_bias(
            key,
            value,
            spatial_shape,
            stride,
            reference_boxes,
            key_padding_mask,
            value_padding_mask,
        )
        return self.attn(
            _with_pos(query, query_pos),
            _with_pos(key, key_pos),
            _with_pos(value, value_pos),
            attn_bias=bias,
            key_padding_mask=padding_mask,
        )

    def logit_terms(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        spatial_shape: Tuple[int, int],
        stride: float = 16.0,
        query_pos: Optional[Tensor] = None,
        key_pos: Optional[Tensor] = None,
        value_pos: Optional[Tensor] = None,
        reference_boxes: Optional[Tensor] = None,
        key_padding_mask: Optional[Tensor] = None,
        value_padding_mask: Optional[Tensor] = None,
    ) -> Dict[str, Optional[Tensor]]:
        """The attention logits split into their two terms, and the weights,
        computed explicitly (for analysis; :meth:`forward` never forms them).

        Arguments as :meth:`forward` (``value`` and ``value_pos`` only
        shape the padding mask here).

        Returns:
            dict[str, Tensor]: ``content`` (B, heads, Q, H * W), the scaled
            query-key products (exemplar alignment); ``bias``
            (B, heads, Q, H * W), the BoxRPB prior, or None without it;
            ``weights`` (B, heads, Q, H * W), the softmax of their sum
            (0 on padding); ``valid`` bool (B, H * W), the attended cells.
        """
        padding_mask, bias = self._mask_and_bias(
            key,
            value,
            spatial_shape,
            stride,
            reference_boxes,
            key_padding_mask,
            value_padding_mask,
        )
        attn = self.attn
        heads = attn.num_heads
        q = attn.q_proj(_with_pos(query, query_pos))
        k = attn.k_proj(_with_pos(key, key_pos))
        q = q.unflatten(-1, (heads, -1)).transpose(1, 2)
        k = k.unflatten(-1, (heads, -1)).transpose(1, 2)
        content = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
        logits = content if bias is None else content + bias
        valid = torch.ones(key.shape[:2], dtype=torch.bool, device=key.device)
        if padding_mask is not None:
            valid = ~padding_mask
            logits = logits.masked_fill(
                padding_mask[:, None, None], float('-inf')
            )
        weights = logits.softmax(-1).nan_to_num(0.0)
        return dict(content=content, bias=bias, weights=weights, valid=valid)

    def _mask_and_bias(
        self,
        key: Tensor,
        value: Tensor,
        spatial_shape: Tuple[int, int],
        stride: float,
        reference_boxes: Optional[Tensor],
        key_padding_mask: Optional[Tensor],
        value_padding_mask: Optional[Tensor],
    ) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """Check the grids; the joint padding mask (B, H * W) and the dense
        BoxRPB bias (B, heads, Q, H * W) (each None when absent)."""
        height, width = spatial_shape
        for name, tokens in (('key', key), ('value', value)):
            if tokens.dim() != 3 or tokens.shape[1] != height * width:
                raise ValueError(
                    f'{name} must have shape (batch, H * W, channels) with '
                    f'(H, W) = {tuple(spatial_shape)}, got '
                    f'{tuple(tokens.shape)}: keys and values must lie on the '
                    'same padded grid.'
                )
        # A grid cell is left out only where neither image has content.
        padding_mask = None
        if key_padding_mask is not None and value_padding_mask is not None:
            padding_mask = key_padding_mask & value_padding_mask
        bias = None
        if self.box_rpb is not None:
            if reference_boxes is None:
                raise ValueError(
                    'reference_boxes (batch, num_queries, 4) are required '
                    'when use_box_rpb=True.'
                )
            # Non-finite boxes would turn every output NaN. An asynchronous
            # check: an error here on the CPU, a device-side assert on CUDA,
            # and no host-device synchronisation either way.
            torch._assert_async(
                torch.isfinite(reference_boxes).all(),
                'IndirectAttention: reference_boxes hold NaN or inf; '
                'expected finite (cx, cy, w, h) normalised to the grid. In '
                'training this means the weights diverged (too high a '
                'learning rate, no gradient clipping).',
            )
            # Expanded in the attention's compute dtype: the dense bias is
            # the largest tensor of the layer.
            dtype = compute_dtype(key)
            rpe_y, rpe_x = self.box_rpb(reference_boxes, spatial_shape, stride)
            bias = expand_axial_bias(rpe_y.to(dtype), rpe_x.to(dtype))
        return padding_mask, bias
