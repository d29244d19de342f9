"""IA-DETR: one-shot detection with indirect attention (arXiv 2509.26015)."""

import math
from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.detectors.base_detr import DetectionTransformer
from mmdet.models.layers import SinePositionalEncoding
from mmdet.models.layers.transformer import (
    DetrTransformerDecoder,
    coordinate_to_encoding,
)
from mmdet.registry import MODELS
from mmdet.structures import OptSampleList
from mmengine.model import ModuleList
from torch import Tensor, nn

from ..layers.resample import resample_stack, stride_steps


def _valid_ratios(mask: Tensor) -> Tensor:
    """(w, h) fraction of each map that is not padding; mask (B, H, W)."""
    valid_h = (~mask[:, :, 0]).sum(1).float() / mask.shape[1]
    valid_w = (~mask[:, 0, :]).sum(1).float() / mask.shape[2]
    return torch.stack([valid_w, valid_h], -1)


@MODELS.register_module()
class IADETR(DetectionTransformer):
    """IA-DETR: detect every instance of the exemplar's class in the target.

    The backbone, neck (a 1x1 conv + GroupNorm input projection) and sine
    positions are shared by the target and the exemplar, which arrive on one
    padded canvas (see :class:`OneShotDetDataPreprocessor`). Two-stage
    query selection scores proposals on the target's tokens; the registered
    decoder (``decoder.type``: :class:`IADETRDecoder` or an ablation) reads
    the exemplar as keys and the target as values.

    Args:
        num_queries (int): One-to-one queries. Defaults to 300.
        num_queries_one2many (int): Extra one-to-many queries used only in
            training (hybrid matching; 0 disables it). Defaults to 1500.
        feat_stride (int): Stride of the single feature map. Defaults to 16.
        proposal_strides (Sequence[int]): Strides at which proposals are
            generated from the feature map. Defaults to (8, 16, 32, 64).
        freeze_backbone (bool): Keep the backbone frozen (stage-1
            pretraining). Defaults to False.
        encoder (dict, optional): The optional exemplar-aware encoder (the
            official ``--encoder`` option): layers in which the target's
            tokens attend to each other, then to the exemplar's tokens
            (keys: exemplar + position, values: exemplar), then an FFN,
            built as mmdet's
            :class:`~mmdet.models.layers.DetrTransformerDecoder` (keys
            ``num_layers``, ``layer_cfg``, ``post_norm_cfg``). Its output
            replaces the target tokens for the proposals and as the values
            of indirect attention. Defaults to None (as the official
            default).
        **kwargs: :class:`~mmdet.models.detectors.DetectionTransformer`
            arguments (``backbone``, ``neck``, ``decoder``, ``bbox_head``,
            ``positional_encoding``, ``train_cfg``, ``test_cfg``, ...).
    """

    def __init__(
        self,
        *args,
        num_queries: int = 300,
        num_queries_one2many: int = 1500,
        feat_stride: int = 16,
        proposal_strides: Sequence[int] = (8, 16, 32, 64),
        freeze_backbone: bool = False,
        **kwargs,
    ) -> None:
        for name, value in (
            ('num_queries', num_queries),
            ('num_queries_one2many', num_queries_one2many),
        ):
            if not isinstance(value, int) or value < (name == 'num_queries'):
                raise ValueError(
                    f'{name} must be a positive int (or 0 for '
                    f'num_queries_one2many), got {value!r}.'
                )
        self.num_queries_one2many = num_queries_one2many
        self.feat_stride = feat_stride
        self.proposal_strides = tuple(proposal_strides)
        self.freeze_backbone = freeze_backbone
        super().__init__(*args, num_queries=num_queries, **kwargs)
        if freeze_backbone:
            self.backbone.requires_grad_(False)

    def _init_layers(self) -> None:
        self.positional_encoding = SinePositionalEncoding(
            **self.positional_encoding
        )
        self.encoder = (
            DetrTransformerDecoder(**self.encoder, return_intermediate=False)
            if self.encoder
            else None
        )
        self.decoder = MODELS.build(self.decoder)
        c = self.embed_dims = self.decoder.embed_dims
        if self.positional_encoding.num_feats * 2 != c:
            raise ValueError(
                'positional_encoding.num_feats * 2 must equal the decoder '
                f'embed_dims ({c}), got {self.positional_encoding.num_feats}.'
            )
        num_pred = self.bbox_head.num_pred_layer
        if num_pred != self.decoder.num_layers + 1:
            raise ValueError(
                f'bbox_head.num_pred_layer must be decoder num_layers + 1 '
                f'({self.decoder.num_layers + 1}: one branch per layer and '
                f'one for the proposals), got {num_pred}.'
            )
        self.level_embed = nn.Parameter(torch.zeros(1, c))
        self.memory_trans_fc = nn.Linear(c, c)
        self.memory_trans_norm = nn.LayerNorm(c)
        self.pos_trans_fc = nn.Linear(2 * c, 2 * c)
        self.pos_trans_norm = nn.LayerNorm(2 * c)
        self.query_embedding = nn.Embedding(
            self.num_queries + self.num_queries_one2many, c
        )
        projs = []
        for stride in self.proposal_strides:
            steps = stride_steps(self.feat_stride, stride, 'proposal_strides')
            projs.append(
                resample_stack(
                    [c] * (steps + 1), upsample=stride < self.feat_stride
                )
            )
        self.proposal_projs = ModuleList(projs)

    def init_weights(self) -> None:
        """Xavier for the transformer glue, normal level embedding; the
        decoder and head initialise themselves (as the official model)."""
        super().init_weights()
        for module in (
            self.memory_trans_fc,
            self.pos_trans_fc,
            self.proposal_projs,
        ):
            for p in module.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        nn.init.normal_(self.level_embed)
        self.decoder.init_weights()

    def extract_feat(
        self, batch_inputs: Dict[str, Tensor]
    ) -> Tuple[Tensor, Tensor]:
        """Run the shared backbone and neck on targets and exemplars.

        Args:
            batch_inputs (dict[str, Tensor]): ``target`` and ``exemplar``
                images on one canvas, each of shape (B, 3, H, W).

        Returns:
            tuple[Tensor, Tensor]: Target and exemplar feature maps, each of
            shape (B, C, H / feat_stride, W / feat_stride).
        """
        if not isinstance(batch_inputs, dict) or set(batch_inputs) != {
            'target',
            'exemplar',
        }:
            raise TypeError(
                'IADETR takes inputs=dict(target=Tensor, exemplar=Tensor) '
                'from OneShotDetDataPreprocessor, got '
                f'{type(batch_inputs).__name__}.'
            )
        target, exemplar = batch_inputs['target'], batch_inputs['exemplar']
        if target.shape != exemplar.shape:
            raise ValueError(
                'target and exemplar must share one padded canvas, got '
                f'{tuple(target.shape)} and {tuple(exemplar.shape)}.'
            )
        x = self.backbone(torch.cat([target, exemplar]))
        if self.with_neck:
            x = self.neck(x)
        if len(x) != 1:
            raise ValueError(
                f'IADETR uses one feature level, got {len(x)}; '
                'set the backbone/neck to output one map.'
            )
        return x[0].chunk(2)

    def forward_transformer(
        self,
        img_feats: Tuple[Tensor, Tensor],
        batch_data_samples: OptSampleList = None,
    ) -> Dict:
        encoder_inputs, decoder_inputs = self.pre_transformer(
            img_feats, batch_data_samples
        )
        decoder_inputs['memory'] = self.forward_encoder(**encoder_inputs)
        tmp_dec_in, head_inputs = self.pre_decoder(**decoder_inputs)
        decoder_inputs.update(tmp_dec_in)
        head_inputs.update(self.forward_decoder(**decoder_inputs))
        return head_inputs

    def pre_transformer(
        self,
        img_feats: Tuple[Tensor, Tensor],
        batch_data_samples: OptSampleList = None,
    ) -> Tuple[Dict, Dict]:
        """Flatten both maps, build masks, positions and valid ratios."""
        target, exemplar = img_feats
        batch, c, h, w = target.shape
        metas = [s.metainfo for s in batch_data_samples]
        canvas_h, canvas_w = metas[0]['batch_input_shape']
        expected = (
            math.ceil(canvas_h / self.feat_stride),
            math.ceil(canvas_w / self.feat_stride),
        )
        if (h, w) != expected:
            raise ValueError(
                f'the feature map is {h}x{w} for a {canvas_h}x{canvas_w} '
                f'canvas; feat_stride={self.feat_stride} expects '
                f'{expected[0]}x{expected[1]}. Set feat_stride to the '
                "backbone/neck output stride, and the data preprocessor's "
                'pad_size_divisor to a multiple of the deepest backbone '
                'stride (32 for a stride-32 stage upsampled to 16).'
            )
        masks = []
        for key in ('img_shape', 'exemplar_shape'):
            mask = target.new_ones((batch, canvas_h, canvas_w))
            for i, meta in enumerate(metas):
                if key not in meta:
                    raise KeyError(
                        f'data sample {i} has no metainfo {key!r}: build the '
                        'batch with OneShotDetDataPreprocessor.'
                    )
                valid_h, valid_w = meta[key][:2]
                mask[i, :valid_h, :valid_w] = 0
            masks.append(F.interpolate(mask[None], size=(h, w)).bool()[0])
        memory_mask, exemplar_mask = masks
        memory_pos = self.positional_encoding(memory_mask)
        exemplar_pos = self.positional_encoding(exemplar_mask)

        def flat(x: Tensor) -> Tensor:
            return x.flatten(2).transpose(1, 2)

        memory_pos = flat(memory_pos) + self.level_embed
        exemplar_inputs = dict(
            exemplar_memory=flat(exemplar),
            exemplar_pos=flat(exemplar_pos),
            exemplar_mask=exemplar_mask.flatten(1),
        )
        encoder_inputs = dict(
            feat=flat(target), feat_pos=memory_pos, **exemplar_inputs
        )
        decoder_inputs = dict(
            memory_pos=memory_pos,
            memory_mask=memory_mask.flatten(1),
            **exemplar_inputs,
            spatial_shape=(h, w),
            valid_ratios=_valid_ratios(memory_mask),
        )
        return encoder_inputs, decoder_inputs

    def forward_encoder(
        self,
        feat: Tensor,
        feat_pos: Tensor,
        exemplar_memory: Tensor,
        exemplar_pos: Tensor,
        exemplar_mask: Tensor,
    ) -> Tensor:
        """The optional exemplar-aware encoder.

        Args:
            feat (Tensor): Target tokens, shape (B, N, C).
            feat_pos (Tensor): Their positions, shape (B, N, C).
            exemplar_memory (Tensor): Exemplar tokens, shape (B, N, C).
            exemplar_pos (Tensor): Their positions, shape (B, N, C).
            exemplar_mask (Tensor): Bool (B, N), True on the exemplar's
                padding (never attended).

        Returns:
            Tensor: The target tokens, shape (B, N, C); unchanged without
            an encoder.
        """
        if self.encoder is None:
            return feat
        return self.encoder(
            query=feat,
            key=exemplar_memory,
            value=exemplar_memory,
            query_pos=feat_pos,
            key_pos=exemplar_pos,
            key_padding_mask=exemplar_mask,
        )[0]

    def _proposals(
        self,
        memory: Tensor,
        memory_mask: Tensor,
        spatial_shape: Tuple[int, int],
    ) -> Tuple[Tensor, Tensor]:
        """Token features and proposal boxes (logits) at every proposal
        stride: one box per grid cell, size 0.05 * 2**level of the valid
        region; padded or out-of-range proposals get +inf and zero features.
        """
        batch, _, c = memory.shape
        h, w = spatial_shape
        grid = memory.transpose(1, 2).reshape(batch, c, h, w)
        mask = memory_mask.view(batch, 1, h, w).float()
        feats, proposals, masks = [], [], []
        for level, proj in enumerate(self.proposal_projs):
            feat = proj(grid)
            lvl_mask = F.interpolate(mask, size=feat.shape[-2:]).bool()[:, 0]
            lh, lw = feat.shape[-2:]
            valid = torch.stack(
                [(~lvl_mask[:, 0, :]).sum(1), (~lvl_mask[:, :, 0]).sum(1)], -1
            )
            ys, xs = torch.meshgrid(
                torch.arange(lh, dtype=memory.dtype, device=memory.device),
                torch.arange(lw, dtype=memory.dtype, device=memory.device),
                indexing='ij',
            )
            centres = (torch.stack([xs, ys], -1)[None] + 0.5) / valid[
                :, None, None, :
            ]
            sizes = torch.full_like(centres, 0.05 * 2.0**level)
            proposals.append(torch.cat([centres, sizes], -1).flatten(1, 2))
            feats.append(feat.flatten(2).transpose(1, 2))
            masks.append(lvl_mask.flatten(1))
        proposals = torch.cat(proposals, 1)
        feats, masks = torch.cat(feats, 1), torch.cat(masks, 1)
        invalid = masks[..., None] | ~(
            (proposals > 0.01) & (proposals < 0.99)
        ).all(-1, keepdim=True)
        proposals = torch.log(proposals / (1 - proposals)).masked_fill(
            invalid, float('inf')
        )
        feats = feats.masked_fill(invalid, 0.0)
        return self.memory_trans_norm(self.memory_trans_fc(feats)), proposals

    def pre_decoder(
        self,
        memory: Tensor,
        memory_mask: Tensor,
        spatial_shape: Tuple[int, int],
        **kwargs,
    ) -> Tuple[Dict, Dict]:
        """Two-stage query selection with mixed content queries."""
        batch = memory.shape[0]
        output_memory, proposals = self._proposals(
            memory, memory_mask, spatial_shape
        )
        head = self.bbox_head
        layer = self.decoder.num_layers
        enc_outputs_class = head.cls_branches[layer](output_memory)
        enc_outputs_coord_unact = (
            head.reg_branches[layer](output_memory) + proposals
        )
        num_queries = self.num_queries + (
            self.num_queries_one2many if self.training else 0
        )
        num_queries = min(num_queries, enc_outputs_class.shape[1])
        topk = torch.topk(enc_outputs_class[..., 0], num_queries, dim=1)[1]
        reference_points = (
            torch.gather(
                enc_outputs_coord_unact, 1, topk[..., None].expand(-1, -1, 4)
            )
            .detach()
            .sigmoid()
        )
        pos = self.pos_trans_norm(
            self.pos_trans_fc(
                coordinate_to_encoding(
                    reference_points, num_feats=self.embed_dims // 2
                )
            )
        )
        query_pos = pos[..., : self.embed_dims]
        query = self.query_embedding.weight[:num_queries][None].expand(
            batch, -1, -1
        )
        self_attn_mask = None
        if num_queries > self.num_queries:
            # One-to-one and one-to-many queries do not see each other.
            self_attn_mask = torch.zeros(
                num_queries,
                num_queries,
                dtype=torch.bool,
                device=memory.device,
            )
            self_attn_mask[self.num_queries :, : self.num_queries] = True
            self_attn_mask[: self.num_queries, self.num_queries :] = True
        decoder_inputs = dict(
            query=query,
            query_pos=query_pos,
            memory=memory,
            memory_mask=memory_mask,
            spatial_shape=spatial_shape,
            reference_points=reference_points,
            self_attn_mask=self_attn_mask,
        )
        head_inputs = (
            dict(
                enc_outputs_class=enc_outputs_class,
                enc_outputs_coord=enc_outputs_coord_unact.sigmoid(),
            )
            if self.training
            else dict()
        )
        return decoder_inputs, head_inputs

    def forward_decoder(
        self,
        query: Tensor,
        query_pos: Tensor,
        memory: Tensor,
        reference_points: Tensor,
        **kwargs,
    ) -> Dict:
        """Run the decoder; ``references`` starts with the initial boxes."""
        hidden_states, references = self.decoder(
            query=query,
            query_pos=query_pos,
            memory=memory,
            reference_points=reference_points,
            reg_branches=self.bbox_head.reg_branches,
            stride=float(self.feat_stride),
            **kwargs,
        )
        return dict(
            hidden_states=hidden_states,
            references=[reference_points, *references],
        )

    def train(self, mode: bool = True) -> 'IADETR':
        """Keep a frozen backbone's norm statistics frozen too."""
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self
