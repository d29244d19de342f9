"""IA-DETR decoders: indirect attention, and the paper's two ablations.

Vocabulary as in mmdet's DETRs (batch first): ``query``/``query_pos`` are the
object queries, ``memory``/``memory_pos`` the target image's tokens,
``exemplar_memory``/``exemplar_pos`` the exemplar's tokens on the same padded
grid, ``reference_points`` the queries' boxes (cx, cy, w, h) normalised to
the target's valid region.
"""

from typing import List, Optional, Sequence, Tuple

import torch
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN
from mmdet.models.layers.transformer import DetrTransformerDecoderLayer
from mmdet.models.layers.transformer.utils import inverse_sigmoid
from mmdet.registry import MODELS
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import trunc_normal_init
from torch import Tensor, nn

from xattn_mm.core import IndirectAttention, MultiheadAttention


class IADETRDecoderLayer(BaseModule):
    """Pre-norm decoder layer: self-attention, indirect attention, FFN.

    Args:
        self_attn_cfg (dict): :class:`~xattn_mm.core.MultiheadAttention`
            arguments. Defaults to 256 dims, 8 heads.
        cross_attn_cfg (dict): :class:`~xattn_mm.core.IndirectAttention`
            arguments. Defaults to 256 dims, 8 heads, BoxRPB.
        ffn_cfg (dict): :class:`mmcv.cnn.bricks.transformer.FFN` arguments.
            Defaults to 2048 hidden channels, ReLU, no dropout.
        norm_cfg (dict): Norm config. Defaults to LayerNorm.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(
        self,
        self_attn_cfg: Optional[dict] = None,
        cross_attn_cfg: Optional[dict] = None,
        ffn_cfg: Optional[dict] = None,
        norm_cfg: Optional[dict] = None,
        init_cfg=None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        self.self_attn = MultiheadAttention(
            **dict(dict(embed_dims=256, num_heads=8), **(self_attn_cfg or {}))
        )
        self.cross_attn = IndirectAttention(
            **dict(dict(embed_dims=256, num_heads=8), **(cross_attn_cfg or {}))
        )
        self.embed_dims = self.self_attn.embed_dims
        self.ffn = FFN(
            **dict(
                dict(
                    embed_dims=self.embed_dims,
                    feedforward_channels=2048,
                    ffn_drop=0.0,
                    act_cfg=dict(type='ReLU', inplace=True),
                ),
                **(ffn_cfg or {}),
            )
        )
        norm_cfg = norm_cfg or dict(type='LN')
        self.norms = ModuleList(
            [build_norm_layer(norm_cfg, self.embed_dims)[1] for _ in range(3)]
        )

    def forward(
        self,
        query: Tensor,
        query_pos: Tensor,
        memory: Tensor,
        exemplar_memory: Tensor,
        reference_boxes: Tensor,
        spatial_shape: Tuple[int, int],
        stride: float,
        memory_pos: Optional[Tensor] = None,
        exemplar_pos: Optional[Tensor] = None,
        memory_mask: Optional[Tensor] = None,
        exemplar_mask: Optional[Tensor] = None,
        self_attn_groups: Optional[Sequence[int]] = None,
    ) -> Tensor:
        """Update the queries.

        Args:
            query (Tensor): Shape (B, Q, C).
            query_pos (Tensor): Shape (B, Q, C).
            memory (Tensor): Value tokens (target), shape (B, H * W, C).
            exemplar_memory (Tensor): Key tokens (exemplar), shape
                (B, H * W, C).
            reference_boxes (Tensor): (cx, cy, w, h) normalised to the padded
                grid, shape (B, Q, 4).
            spatial_shape (tuple[int, int]): The grid (H, W).
            stride (float): Input pixels per grid cell.
            memory_pos (Tensor, optional): Shape (B, H * W, C).
            exemplar_pos (Tensor, optional): Shape (B, H * W, C).
            memory_mask (Tensor, optional): Bool (B, H * W), True on the
                target's padding.
            exemplar_mask (Tensor, optional): Bool (B, H * W), True on the
                exemplar's padding.
            self_attn_groups (Sequence[int], optional): Sizes of consecutive
                query groups that attend only within themselves (IA-DETR's
                one-to-one and one-to-many queries); they sum to Q.
                Defaults to None (one group).

        Returns:
            Tensor: Shape (B, Q, C).
        """
        x = self.norms[0](query)
        query = query + self._self_attention(
            x, x + query_pos, self_attn_groups
        )
        query = query + self.cross_attn(
            self.norms[1](query),
            exemplar_memory,
            memory,
            spatial_shape,
            stride,
            query_pos=query_pos,
            key_pos=exemplar_pos,
            value_pos=memory_pos,
            reference_boxes=reference_boxes,
            key_padding_mask=exemplar_mask,
            value_padding_mask=memory_mask,
        )
        return self.ffn(self.norms[2](query), identity=query)

    def _self_attention(
        self, x: Tensor, x_pos: Tensor, groups: Optional[Sequence[int]]
    ) -> Tensor:
        """Self-attention of each query group: one unmasked SDPA call per
        group, which the flash kernel serves on CUDA (a block-diagonal mask
        would force the memory-efficient kernel and attend to the blocked
        half anyway)."""
        if groups is None:
            return self.self_attn(x_pos, x_pos, x)
        groups = list(groups)
        if sum(groups) != x.shape[1] or min(groups) <= 0:
            raise ValueError(
                f'self_attn_groups {groups} must be positive sizes summing '
                f'to the {x.shape[1]} queries.'
            )
        return torch.cat(
            [
                self.self_attn(p, p, v)
                for p, v in zip(x_pos.split(groups, 1), x.split(groups, 1))
            ],
            dim=1,
        )


@MODELS.register_module()
class IADETRDecoder(BaseModule):
    """IA-DETR decoder: pre-norm layers of indirect attention, iterative box
    refinement (look forward twice) and BoxRPB recomputed from each layer's
    boxes.

    Args:
        num_layers (int): Number of layers. Defaults to 6.
        layer_cfg (dict, optional): :class:`IADETRDecoderLayer` arguments.
        look_forward_twice (bool): Return the refined boxes before they are
            detached, so a layer's box loss also trains the previous
            layer's refinement. Defaults to True.
        post_norm_cfg (dict): Norm applied to every layer's output before
            the heads. Defaults to LayerNorm.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(
        self,
        num_layers: int = 6,
        layer_cfg: Optional[dict] = None,
        look_forward_twice: bool = True,
        post_norm_cfg: Optional[dict] = None,
        init_cfg=None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if not isinstance(num_layers, int) or num_layers <= 0:
            raise ValueError(
                f'num_layers must be a positive int, got {num_layers!r}.'
            )
        self.num_layers = num_layers
        self.layers = ModuleList(
            [
                IADETRDecoderLayer(**(layer_cfg or {}))
                for _ in range(num_layers)
            ]
        )
        self.embed_dims = self.layers[0].embed_dims
        self.look_forward_twice = look_forward_twice
        self.post_norm = build_norm_layer(
            post_norm_cfg or dict(type='LN'), self.embed_dims
        )[1]

    def init_weights(self) -> None:
        """Truncated-normal (std 0.02) linear layers, as Plain-DETR."""
        super().init_weights()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_init(m, std=0.02, bias=0.0)

    def forward(
        self,
        query: Tensor,
        query_pos: Tensor,
        memory: Tensor,
        exemplar_memory: Tensor,
        reference_points: Tensor,
        spatial_shape: Tuple[int, int],
        valid_ratios: Tensor,
        reg_branches: List[nn.Module],
        stride: float = 16.0,
        memory_pos: Optional[Tensor] = None,
        exemplar_pos: Optional[Tensor] = None,
        memory_mask: Optional[Tensor] = None,
        exemplar_mask: Optional[Tensor] = None,
        self_attn_groups: Optional[Sequence[int]] = None,
    ) -> Tuple[Tensor, Tensor]:
        """Run every layer and refine the boxes after each.

        Args:
            query (Tensor): Content queries, shape (B, Q, C).
            query_pos (Tensor): Query positions, shape (B, Q, C).
            memory (Tensor): Target tokens, shape (B, H * W, C).
            exemplar_memory (Tensor): Exemplar tokens on the same grid,
                shape (B, H * W, C).
            reference_points (Tensor): Initial boxes (cx, cy, w, h),
                normalised to the target's valid region, shape (B, Q, 4).
            spatial_shape (tuple[int, int]): The grid (H, W).
            valid_ratios (Tensor): The target's valid (w, h) fraction of the
                grid, shape (B, 2).
            reg_branches (list[nn.Module]): One box-delta branch per layer,
                each mapping (B, Q, C) to (B, Q, 4) in logit space.
            stride (float): Input pixels per grid cell. Defaults to 16.
            memory_pos (Tensor, optional): Shape (B, H * W, C).
            exemplar_pos (Tensor, optional): Shape (B, H * W, C).
            memory_mask (Tensor, optional): Bool (B, H * W).
            exemplar_mask (Tensor, optional): Bool (B, H * W).
            self_attn_groups (Sequence[int], optional): Query groups that
                attend only within themselves (see
                :meth:`IADETRDecoderLayer.forward`). Defaults to None.

        Returns:
            tuple[Tensor, Tensor]: ``hidden_states`` of shape
            (num_layers, B, Q, C) (after ``post_norm``) and ``references``
            of shape (num_layers, B, Q, 4): each layer's refined boxes.
        """
        if len(reg_branches) < self.num_layers:
            raise ValueError(
                f'reg_branches has {len(reg_branches)} branches; the decoder '
                f'needs one per layer ({self.num_layers}).'
            )
        scale = torch.cat([valid_ratios, valid_ratios], -1)[:, None]
        hidden_states, references = [], []
        for layer, reg_branch in zip(self.layers, reg_branches):
            query = layer(
                query,
                query_pos,
                memory,
                exemplar_memory,
                reference_points * scale,
                spatial_shape,
                stride,
                memory_pos=memory_pos,
                exemplar_pos=exemplar_pos,
                memory_mask=memory_mask,
                exemplar_mask=exemplar_mask,
                self_attn_groups=self_attn_groups,
            )
            normed = self.post_norm(query)
            new_points = (
                reg_branch(normed) + inverse_sigmoid(reference_points)
            ).sigmoid()
            hidden_states.append(normed)
            references.append(
                new_points if self.look_forward_twice else new_points.detach()
            )
            reference_points = new_points.detach()
        return torch.stack(hidden_states), torch.stack(references)


@MODELS.register_module()
class MisalignedAttentionDecoder(IADETRDecoder):
    """Ablation: keys from the exemplar, values from the target, no BoxRPB
    (plain "misaligned" attention). Same arguments as
    :class:`IADETRDecoder`; ``layer_cfg.cross_attn_cfg.use_box_rpb`` is
    forced to False."""

    def __init__(self, *args, layer_cfg: Optional[dict] = None, **kwargs):
        layer_cfg = dict(layer_cfg or {})
        layer_cfg['cross_attn_cfg'] = dict(
            layer_cfg.get('cross_attn_cfg') or {}, use_box_rpb=False
        )
        super().__init__(*args, layer_cfg=layer_cfg, **kwargs)


class AlignmentLayer(DetrTransformerDecoderLayer):
    """One layer of the double cross-attention block: mmdet's DETR decoder
    layer without its self-attention and in pre-norm order, i.e. the
    target's tokens cross-attend to the exemplar's tokens (queries: target +
    position, keys: exemplar + position, values: exemplar), then an FFN,
    each behind a norm and with a residual.

    The cross-attention is :class:`xattn_mm.core.MultiheadAttention` (the
    project's SDPA routine, batch first); ``cross_attn_cfg``, ``ffn_cfg``,
    ``norm_cfg`` and ``init_cfg`` are mmdet's.

    Args:
        cross_attn_cfg (dict): :class:`~xattn_mm.core.MultiheadAttention`
            arguments (``embed_dims``, ``num_heads``, ...).
        ffn_cfg (dict): mmcv ``FFN`` arguments. Defaults to 2048 hidden
            channels.
        norm_cfg (dict): Norm of both sub-layers. Defaults to LayerNorm.
        init_cfg (dict, optional): Initialisation. Defaults to None.
    """

    def __init__(
        self,
        cross_attn_cfg: dict,
        ffn_cfg: Optional[dict] = None,
        norm_cfg: Optional[dict] = None,
        init_cfg: Optional[dict] = None,
    ) -> None:
        cross_attn_cfg = dict(cross_attn_cfg, batch_first=True)
        ffn = dict(
            embed_dims=cross_attn_cfg['embed_dims'],
            feedforward_channels=2048,
        )
        super().__init__(
            self_attn_cfg=dict(batch_first=True),  # unused: no self-attention
            cross_attn_cfg=cross_attn_cfg,
            ffn_cfg=dict(ffn, **(ffn_cfg or {})),
            norm_cfg=norm_cfg or dict(type='LN'),
            init_cfg=init_cfg,
        )

    def _init_layers(self) -> None:
        attn_cfg = dict(self.cross_attn_cfg)
        attn_cfg.pop('batch_first')  # the core attention is batch first
        self.cross_attn = MultiheadAttention(**attn_cfg)
        self.embed_dims = self.cross_attn.embed_dims
        self.ffn = FFN(**self.ffn_cfg)
        self.norms = ModuleList(
            [
                build_norm_layer(self.norm_cfg, self.embed_dims)[1]
                for _ in range(2)
            ]
        )

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        query_pos: Tensor,
        key_pos: Tensor,
        key_padding_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """Align the target tokens to the exemplar tokens.

        Args:
            query (Tensor): Target tokens, shape (B, N, C).
            key (Tensor): Exemplar tokens, shape (B, M, C).
            value (Tensor): Exemplar tokens, shape (B, M, C).
            query_pos (Tensor): Target positions, shape (B, N, C).
            key_pos (Tensor): Exemplar positions, shape (B, M, C).
            key_padding_mask (Tensor, optional): Bool (B, M), True on the
                exemplar's padding.

        Returns:
            Tensor: The aligned target tokens, shape (B, N, C).
        """
        x = self.norms[0](query)
        query = query + self.cross_attn(
            x + query_pos,
            key + key_pos,
            value,
            key_padding_mask=key_padding_mask,
        )
        return self.ffn(self.norms[1](query), identity=query)


@MODELS.register_module()
class DoubleCrossAttentionDecoder(IADETRDecoder):
    """Ablation: a block of cross-attention layers aligns the target tokens
    to the exemplar, then a standard BoxRPB cross-attention decoder reads the
    aligned target (keys and values both from it).

    Args:
        num_align_layers (int): Layers of the alignment block.
            Defaults to 6.
        align_layer_cfg (dict, optional): :class:`AlignmentLayer`
            arguments. Defaults to the decoder's width and heads and a
            2048-channel FFN.
        *args, **kwargs: As :class:`IADETRDecoder`.
    """

    def __init__(
        self,
        *args,
        num_align_layers: int = 6,
        align_layer_cfg: Optional[dict] = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        attn = self.layers[0].self_attn
        cfg = dict(
            cross_attn_cfg=dict(
                embed_dims=attn.embed_dims, num_heads=attn.num_heads
            )
        )
        cfg.update(align_layer_cfg or {})
        self.align_layers = ModuleList(
            [AlignmentLayer(**cfg) for _ in range(num_align_layers)]
        )

    def forward(
        self,
        query: Tensor,
        query_pos: Tensor,
        memory: Tensor,
        exemplar_memory: Tensor,
        *args,
        memory_pos: Optional[Tensor] = None,
        exemplar_pos: Optional[Tensor] = None,
        memory_mask: Optional[Tensor] = None,
        exemplar_mask: Optional[Tensor] = None,
        **kwargs,
    ) -> Tuple[Tensor, Tensor]:
        """Align the target, then decode it; arguments as
        :meth:`IADETRDecoder.forward`."""
        aligned = memory
        for layer in self.align_layers:
            aligned = layer(
                query=aligned,
                key=exemplar_memory,
                value=exemplar_memory,
                query_pos=memory_pos,
                key_pos=exemplar_pos,
                key_padding_mask=exemplar_mask,
            )
        return super().forward(
            query,
            query_pos,
            aligned,
            aligned,
            *args,
            memory_pos=None,
            exemplar_pos=memory_pos,
            memory_mask=memory_mask,
            exemplar_mask=memory_mask,
            **kwargs,
        )
