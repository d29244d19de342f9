"""IA-DETR: one-shot detection with indirect attention (arXiv 2509.26015)."""

import copy
import math
from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.detectors import DeformableDETR
from mmdet.models.detectors.base_detr import DetectionTransformer
from mmdet.models.layers import SinePositionalEncoding
from mmdet.models.layers.transformer import (
    DetrTransformerDecoder,
    coordinate_to_encoding,
)
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample, OptSampleList, SampleList
from mmdet.structures.bbox import bbox_overlaps
from mmengine.model import ModuleList
from mmengine.structures import InstanceData
from torch import Tensor, nn

from ..layers.resample import resample_stack, stride_steps


@MODELS.register_module()
class IADETR(DeformableDETR):
    """IA-DETR: detect every instance of the exemplar's class in the target.

    mmdet's two-stage Deformable DETR template with box refinement (always:
    ``as_two_stage`` and ``with_box_refine`` are set here, and the head's
    ``num_pred_layer``, ``as_two_stage``, ``share_pred_layer`` and
    ``num_queries_one2one`` are derived from the detector, as
    ``DeformableDETR`` derives its head's), on one feature level: its
    ``get_valid_ratio`` and ``gen_encoder_output_proposals`` (proposals of
    size 0.05 * 2**level, valid in the 0.01..0.99 band) serve unchanged;
    the encoder and decoder are IA-DETR's (below), so ``_init_layers`` and
    ``init_weights`` are this class's.

    The backbone, neck (a 1x1 conv + GroupNorm input projection) and sine
    positions are shared by the target and the exemplar, which arrive on one
    padded canvas (see :class:`OneShotDetDataPreprocessor`). Two-stage
    query selection scores proposals on the target's tokens; the registered
    decoder (``decoder.type``: :class:`IADETRDecoder` or an ablation) reads
    the exemplar as keys and the target as values.

    Several exemplars per target (the official IA-DETR test protocol of
    :class:`OneShotDataset`, ``inputs['exemplar']`` of shape
    (B, K, 3, H, W)): as the official ``evaluateall``, the target goes
    through the backbone once, its features are repeated ``K`` times and the
    ``K`` (target, exemplar) pairs are decoded as one batch; each pair's
    detections are post-processed as usual (top ``max_per_img``). The
    official code then scores every pair against its own copy of the ground
    truth; here one detection list per target is needed, so the ``K`` lists
    are merged (:meth:`merge_exemplar_results`): all detections are ranked
    by score, a detection overlapping (IoU > ``test_cfg.exemplar_merge_iou``,
    default 0.5) an already kept one *of another exemplar* is dropped (the
    same object found through two exemplars; one pair's detections never
    suppress each other), and the first ``test_cfg.max_per_img`` are kept.
    ``K`` copies of one exemplar thus give that exemplar's result, and
    ``exemplar_merge_iou=1`` gives the plain top-k over the union. The
    merged ``pred_instances`` carry ``exemplar_index`` (which pair found
    each box). Training takes one exemplar per target.

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

    Raises:
        ValueError: ``bbox_head`` sets a key the detector derives, or the
            config sets one of ``DeformableDETR``'s switches.
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
        fixed = {'with_box_refine', 'as_two_stage', 'num_feature_levels'}
        if fixed & set(kwargs):
            raise ValueError(
                f'IADETR sets {sorted(fixed & set(kwargs))} itself (two-stage '
                'query selection and box refinement on one feature level); '
                'remove them from the config.'
            )
        bbox_head = kwargs.get('bbox_head')
        if bbox_head is not None:
            if 'num_queries_one2one' in bbox_head:
                raise ValueError(
                    'bbox_head.num_queries_one2one is derived from the '
                    "detector's num_queries; remove it from the config."
                )
            # a copy: the config the model was built from stays as written
            # (a checkpoint's config rebuilds the same model)
            kwargs['bbox_head'] = dict(
                copy.deepcopy(bbox_head), num_queries_one2one=num_queries
            )
        self.num_queries_one2many = num_queries_one2many
        self.feat_stride = feat_stride
        self.proposal_strides = tuple(proposal_strides)
        self.freeze_backbone = freeze_backbone
        super().__init__(
            *args,
            num_queries=num_queries,
            with_box_refine=True,
            as_two_stage=True,
            num_feature_levels=1,
            **kwargs,
        )
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
        decoder and head initialise themselves (as the official model), so
        ``DeformableDETR``'s xavier pass over its encoder and decoder is
        skipped."""
        DetectionTransformer.init_weights(self)
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

    @staticmethod
    def _check_inputs(batch_inputs: Dict[str, Tensor]) -> int:
        """Validate the inputs; return ``K``, the exemplars per target."""
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
        per_pair = exemplar.shape
        if exemplar.dim() == 5:
            per_pair = exemplar.shape[:1] + exemplar.shape[2:]
        if target.shape != per_pair:
            raise ValueError(
                'target and exemplar must share one padded canvas, got '
                f'{tuple(target.shape)} and {tuple(exemplar.shape)}.'
            )
        return exemplar.shape[1] if exemplar.dim() == 5 else 1

    def extract_feat(
        self, batch_inputs: Dict[str, Tensor]
    ) -> Tuple[Tensor, Tensor]:
        """Run the shared backbone and neck on targets and exemplars.

        Args:
            batch_inputs (dict[str, Tensor]): ``target`` and ``exemplar``
                images on one canvas, of shape (B, 3, H, W), the exemplars
                possibly (B, K, 3, H, W).

        Returns:
            tuple[Tensor, Tensor]: Target and exemplar feature maps of the
            B * K pairs (target-major), each of shape
            (B * K, C, H / feat_stride, W / feat_stride); a target's map is
            computed once and repeated.
        """
        k = self._check_inputs(batch_inputs)
        target, exemplar = batch_inputs['target'], batch_inputs['exemplar']
        exemplar = exemplar.flatten(0, 1) if exemplar.dim() == 5 else exemplar
        x = self.backbone(torch.cat([target, exemplar]))
        if self.with_neck:
            x = self.neck(x)
        if len(x) != 1:
            raise ValueError(
                f'IADETR uses one feature level, got {len(x)}; '
                'set the backbone/neck to output one map.'
            )
        target_feat, exemplar_feat = x[0].split([len(target), len(exemplar)])
        return target_feat.repeat_interleave(k, 0), exemplar_feat

    def _pair_samples(
        self, batch_inputs: Dict[str, Tensor], batch_data_samples: SampleList
    ) -> Tuple[int, SampleList]:
        """``K`` and one data sample per (target, exemplar) pair, with the
        pair's ``exemplar_shape``: the given samples when each target has
        one exemplar, else new ones holding only the metainfo."""
        k = self._check_inputs(batch_inputs)
        if batch_inputs['exemplar'].dim() == 4:
            return k, batch_data_samples
        pairs = []
        for i, sample in enumerate(batch_data_samples):
            shapes = sample.metainfo.get('exemplar_shapes')
            if shapes is None or len(shapes) != k:
                raise KeyError(
                    f'data sample {i} needs the metainfo exemplar_shapes of '
                    f'its {k} exemplars: build the batch with '
                    'OneShotDetDataPreprocessor.'
                )
            if k == 1:
                sample.set_metainfo(dict(exemplar_shape=tuple(shapes[0])))
                pairs.append(sample)
                continue
            for shape in shapes:
                meta = dict(sample.metainfo, exemplar_shape=tuple(shape))
                pairs.append(DetDataSample(metainfo=meta))
        return k, pairs

    def loss(
        self, batch_inputs: Dict[str, Tensor], batch_data_samples: SampleList
    ) -> Dict[str, Tensor]:
        """Losses of a batch of pairs, one exemplar per target."""
        k, pairs = self._pair_samples(batch_inputs, batch_data_samples)
        if k > 1:
            raise ValueError(
                f'IADETR trains on one exemplar per target, got {k}: '
                'several exemplars (OneShotDataset with '
                'IADETRExemplarSampler) are a test protocol.'
            )
        return super().loss(batch_inputs, pairs)

    def predict(
        self,
        batch_inputs: Dict[str, Tensor],
        batch_data_samples: SampleList,
        rescale: bool = True,
    ) -> SampleList:
        """Detections of each target; with ``K`` exemplars per target, the
        ``K`` pairs' detections merged by :meth:`merge_exemplar_results`.

        Args:
            batch_inputs (dict[str, Tensor]): ``target`` (B, 3, H, W) and
                ``exemplar`` (B, 3, H, W) or (B, K, 3, H, W).
            batch_data_samples (list[DetDataSample]): One per target.
            rescale (bool): Boxes in original image coordinates.
                Defaults to True.

        Returns:
            list[DetDataSample]: ``batch_data_samples`` with
            ``pred_instances`` (``bboxes`` (N, 4), ``scores`` (N,),
            ``labels`` (N,), and ``exemplar_index`` (N,) with ``K`` > 1).
        """
        k, pairs = self._pair_samples(batch_inputs, batch_data_samples)
        if k == 1:
            return super().predict(batch_inputs, pairs, rescale=rescale)
        img_feats = self.extract_feat(batch_inputs)
        head_inputs = self.forward_transformer(img_feats, pairs)
        results = self.bbox_head.predict(
            **head_inputs, rescale=rescale, batch_data_samples=pairs
        )
        merged = [
            self.merge_exemplar_results(results[i * k : (i + 1) * k])
            for i in range(len(batch_data_samples))
        ]
        return self.add_pred_to_datasample(batch_data_samples, merged)

    def _forward(
        self,
        batch_inputs: Dict[str, Tensor],
        batch_data_samples: OptSampleList = None,
    ) -> Tuple[Tensor, ...]:
        """Head outputs of every (target, exemplar) pair (B * K of them,
        target-major), without post-processing."""
        _, pairs = self._pair_samples(batch_inputs, batch_data_samples)
        return super()._forward(batch_inputs, pairs)

    def merge_exemplar_results(
        self, results: Sequence[InstanceData]
    ) -> InstanceData:
        """Merge one target's detections from its ``K`` exemplars.

        All detections are ranked by score (ties: lower exemplar index
        first, then each pair's own order); going down the ranking, a
        detection whose IoU with an already kept detection of another
        exemplar exceeds ``test_cfg.exemplar_merge_iou`` (default 0.5) is
        dropped, and at most ``test_cfg.max_per_img`` are kept.

        Args:
            results (Sequence[InstanceData]): The ``K`` pairs' detections,
                each with ``bboxes`` (N_j, 4), ``scores`` (N_j,) and
                ``labels`` (N_j,).

        Returns:
            InstanceData: The merged detections, by decreasing score, with
            ``exemplar_index`` (N,), the pair each one comes from.
        """
        cfg = self.test_cfg or {}
        iou_thr = cfg.get('exemplar_merge_iou', 0.5)
        max_per_img = cfg.get('max_per_img')
        merged = InstanceData.cat(
            [
                InstanceData(
                    bboxes=r.bboxes,
                    scores=r.scores,
                    labels=r.labels,
                    exemplar_index=r.labels.new_full((len(r),), j),
                )
                for j, r in enumerate(results)
            ]
        )
        order = torch.sort(merged.scores, descending=True, stable=True)[1]
        merged = merged[order]
        index = merged.exemplar_index
        clash = (bbox_overlaps(merged.bboxes, merged.bboxes) > iou_thr) & (
            index[:, None] != index[None, :]
        )
        # The greedy pass runs on the CPU: one copy instead of one device
        # sync per detection.
        clash = clash.cpu()
        dropped = torch.zeros(len(merged), dtype=torch.bool)
        keep = []
        for i in range(len(merged)):
            if max_per_img is not None and len(keep) >= max_per_img:
                break
            if not dropped[i]:
                keep.append(i)
                dropped |= clash[i]
        return merged[index.new_tensor(keep)]

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
        memory_mask, spatial_shape = memory_mask.flatten(1), (h, w)
        encoder_inputs = dict(
            feat=flat(target),
            feat_mask=memory_mask,
            feat_pos=memory_pos,
            spatial_shape=spatial_shape,
            **exemplar_inputs,
        )
        decoder_inputs = dict(
            memory_pos=memory_pos,
            memory_mask=memory_mask,
            **exemplar_inputs,
            spatial_shape=spatial_shape,
            valid_ratios=self.get_valid_ratio(memory_mask.view(batch, h, w)),
        )
        return encoder_inputs, decoder_inputs

    def forward_encoder(
        self,
        feat: Tensor,
        feat_mask: Tensor,
        feat_pos: Tensor,
        spatial_shape: Tuple[int, int],
        exemplar_memory: Tensor,
        exemplar_pos: Tensor,
        exemplar_mask: Tensor,
    ) -> Dict:
        """The optional exemplar-aware encoder.

        Args:
            feat (Tensor): Target tokens, shape (B, N, C).
            feat_mask (Tensor): Bool (B, N), True on the target's padding.
            feat_pos (Tensor): Their positions, shape (B, N, C).
            spatial_shape (tuple[int, int]): (h, w) of the token grid.
            exemplar_memory (Tensor): Exemplar tokens, shape (B, N, C).
            exemplar_pos (Tensor): Their positions, shape (B, N, C).
            exemplar_mask (Tensor): Bool (B, N), True on the exemplar's
                padding (never attended).

        Returns:
            dict: ``memory`` (B, N, C), the target tokens (unchanged
            without an encoder), ``memory_mask`` and ``spatial_shape``:
            the inputs of :meth:`pre_decoder`.
        """
        memory = feat
        if self.encoder is not None:
            memory = self.encoder(
                query=feat,
                key=exemplar_memory,
                value=exemplar_memory,
                query_pos=feat_pos,
                key_pos=exemplar_pos,
                key_padding_mask=exemplar_mask,
            )[0]
        return dict(
            memory=memory, memory_mask=feat_mask, spatial_shape=spatial_shape
        )

    def _proposals(
        self,
        memory: Tensor,
        memory_mask: Tensor,
        spatial_shape: Tuple[int, int],
    ) -> Tuple[Tensor, Tensor]:
        """Token features and proposal boxes (logits) at every proposal
        stride: the token grid resampled to each stride
        (``proposal_projs``), then ``DeformableDETR``'s
        ``gen_encoder_output_proposals`` over those levels.

        Args:
            memory (Tensor): Target tokens, shape (B, N, C).
            memory_mask (Tensor): Bool (B, N), True on padding.
            spatial_shape (tuple[int, int]): (h, w) of the token grid.

        Returns:
            tuple[Tensor, Tensor]: Features (B, M, C) and proposals
            (B, M, 4) of the M cells of all levels; a padded or
            out-of-band proposal is +inf with zero features.
        """
        batch, _, c = memory.shape
        h, w = spatial_shape
        grid = memory.transpose(1, 2).reshape(batch, c, h, w)
        mask = memory_mask.view(batch, 1, h, w).float()
        feats, masks, shapes = [], [], []
        for proj in self.proposal_projs:
            feat = proj(grid)
            shapes.append(tuple(feat.shape[-2:]))
            masks.append(
                F.interpolate(mask, size=shapes[-1]).bool().flatten(1)
            )
            feats.append(feat.flatten(2).transpose(1, 2))
        return self.gen_encoder_output_proposals(
            torch.cat(feats, 1), torch.cat(masks, 1), shapes
        )

    def pre_decoder(
        self,
        memory: Tensor,
        memory_mask: Tensor,
        spatial_shape: Tuple[int, int],
    ) -> Tuple[Dict, Dict]:
        """Two-stage query selection with mixed content queries.

        Args:
            memory (Tensor): Target tokens, shape (B, N, C).
            memory_mask (Tensor): Bool (B, N), True on padding.
            spatial_shape (tuple[int, int]): (h, w) of the token grid.

        Returns:
            tuple[dict, dict]: The decoder's inputs (``query``,
            ``query_pos``, ``memory``, ``reference_points``,
            ``self_attn_groups``, ...) and, in training, the head's
            proposal outputs.
        """
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
        # One-to-one and one-to-many queries do not see each other.
        self_attn_groups = (
            (self.num_queries, num_queries - self.num_queries)
            if num_queries > self.num_queries
            else None
        )
        decoder_inputs = dict(
            query=query,
            query_pos=query_pos,
            memory=memory,
            memory_mask=memory_mask,
            spatial_shape=spatial_shape,
            reference_points=reference_points,
            self_attn_groups=self_attn_groups,
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
