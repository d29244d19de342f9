"""IA-DETR head: focal "matches the exemplar" logit, L1 + GIoU boxes,
auxiliary and proposal losses, the one-to-many (hybrid) branch, and the
official stage 1's base-object channel and contrastive loss."""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.dense_heads import DeformableDETRHead
from mmdet.models.layers.transformer import MLP
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmengine.logging import print_log
from mmengine.model import xavier_init
from mmengine.structures import InstanceData
from torch import Tensor, nn


def contrastive_loss(
    features: Tensor, classes: Tensor, temperature: float
) -> Tensor:
    """The official stage 1's contrastive loss (AlignDet style, github
    Bissmella/IA-DETR 7b3245a, ``models/detr.py`` ``loss_contrastive``):
    for every class c >= 0 among ``classes``, each (anchor i, positive j)
    pair of its features, i = j included, is one row of logits
    ``[cos(i, j), cos(i, n) for every feature n of another class
    (detached)] / temperature`` with the positive as target; the mean
    cross-entropy of a class's rows, averaged over the classes. A class -1
    (the stage-1 patch) is never an anchor but is a negative of every class.

    Args:
        features (Tensor): (N, D) projected query features.
        classes (Tensor): (N,) class ids.
        temperature (float): tau.

    Returns:
        Tensor: Scalar (0 when no class has a feature).
    """
    features = F.normalize(features.float(), dim=-1)
    losses = []
    for c in classes.unique():
        if c < 0:
            continue
        pos = features[classes == c]
        neg = features[classes != c].detach()
        positives = (pos @ pos.T).reshape(-1, 1)
        negatives = (pos @ neg.T).repeat_interleave(len(pos), dim=0)
        logits = torch.cat([positives, negatives], dim=1) / temperature
        target = logits.new_zeros(len(logits), dtype=torch.long)
        losses.append(F.cross_entropy(logits, target))
    if not losses:
        return features.sum() * 0.0
    return torch.stack(losses).mean()


@MODELS.register_module()
class IADETRHead(DeformableDETRHead):
    """Deformable-DETR style head with hybrid matching (H-DETR).

    The logit layout is one sigmoid channel (``num_classes=1``): label 0
    means "an instance of the exemplar's class"; the proposal head uses the
    same channel for the same boxes. The official code keeps 3 channels
    (proposals on channel 0, matches on channel 1); the converter maps them.
    Stage 1 as the official code runs it adds a second channel
    (``num_classes=2``): label 1, "an object of a base class", for the
    base-class boxes :class:`RandomPatchExemplar` adds; predictions read
    channel 0 only, and a stage-2 head (one channel) loading a stage-1
    checkpoint keeps channel 0 of its classifiers.

    Args:
        num_queries_one2one (int): The first queries, matched one-to-one;
            the rest (if any) are matched one-to-many. :class:`IADETR` sets
            it to its ``num_queries`` (a config must not). Defaults to 300.
        k_one2many (int): Ground truth repeats for the one-to-many match.
            Defaults to 6.
        lambda_one2many (float): Weight of the one-to-many losses.
            Defaults to 1.0.
        contrastive_cfg (dict, optional): The official stage 1's
            contrastive loss on the matched decoder queries
            (:func:`contrastive_loss`, every decoder layer, both branches):
            ``embed_dims`` (the projection MLP's output, 3 layers from the
            head's width; default 128), ``temperature`` (0.5) and
            ``loss_weight`` (2.0), the official values. The targets need
            ``gt_instances.classes`` (``RandomPatchExemplar(base_boxes=
            True)``). Defaults to None (no contrastive loss).
        **kwargs: :class:`~mmdet.models.dense_heads.DeformableDETRHead`
            arguments.
    """

    def __init__(
        self,
        *args,
        num_queries_one2one: int = 300,
        k_one2many: int = 6,
        lambda_one2many: float = 1.0,
        contrastive_cfg: Optional[dict] = None,
        **kwargs,
    ) -> None:
        if contrastive_cfg is not None:
            unknown = set(contrastive_cfg) - {
                'embed_dims',
                'temperature',
                'loss_weight',
            }
            if unknown:
                raise ValueError(
                    f'contrastive_cfg has unknown keys {sorted(unknown)}; '
                    'expected embed_dims, temperature, loss_weight.'
                )
            contrastive_cfg = dict(
                dict(embed_dims=128, temperature=0.5, loss_weight=2.0),
                **contrastive_cfg,
            )
        self.contrastive_cfg = contrastive_cfg
        super().__init__(*args, **kwargs)
        if k_one2many < 1:
            raise ValueError(f'k_one2many must be >= 1, got {k_one2many}.')
        self.num_queries_one2one = num_queries_one2one
        self.k_one2many = k_one2many
        self.lambda_one2many = lambda_one2many

    def _init_layers(self) -> None:
        """The host's branches, and the contrastive projections (one per
        decoder layer) when ``contrastive_cfg`` is set."""
        super()._init_layers()
        if self.contrastive_cfg is not None:
            layers = self.num_pred_layer - int(self.as_two_stage)
            dims = self.embed_dims
            out = self.contrastive_cfg['embed_dims']
            self.contrastive_embeds = nn.ModuleList(
                MLP(dims, dims, out, 3) for _ in range(layers)
            )

    def init_weights(self) -> None:
        """The host's initialisation; the contrastive projections Xavier
        uniform with zero biases, as the official ``feature_embed``."""
        super().init_weights()
        if self.contrastive_cfg is not None:
            for m in self.contrastive_embeds.modules():
                if isinstance(m, nn.Linear):
                    xavier_init(m, distribution='uniform', bias=0.0)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Load a stage-1 (two-channel) classifier into a one-channel head:
        keep channel 0, the exemplar match, and say so."""
        for i in range(self.num_pred_layer):
            for name in ('weight', 'bias'):
                key = f'{prefix}cls_branches.{i}.{name}'
                own = getattr(self.cls_branches[i], name)
                saved = state_dict.get(key)
                if (
                    saved is not None
                    and saved.dim() == own.dim()
                    and saved.shape[0] > own.shape[0]
                    and saved.shape[1:] == own.shape[1:]
                ):
                    state_dict[key] = saved[: own.shape[0]]
                    print_log(
                        f'{key}: kept the first {own.shape[0]} of the '
                        f"checkpoint's {saved.shape[0]} channels (the "
                        'exemplar match; the stage-1 base-object channel '
                        'is dropped).',
                        logger='current',
                    )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(
        self, hidden_states: Tensor, references: List[Tensor]
    ) -> Tuple[Tensor, Tensor]:
        """The host's forward, in float32 with autocast off by design.

        Under fp16 autocast a logit above ~8.4 has a sigmoid of exactly 1,
        which makes the matcher's focal cost -inf; mmcv's CUDA focal loss
        has no bf16 kernel; and bf16 sigmoid boxes resolve 1/256 of the
        image. The branches are small, so their float32 cost is negligible.

        Args:
            hidden_states (Tensor): (num_layers, B, Q, C), any float dtype.
            references (list[Tensor]): Each layer's input boxes, (B, Q, 4).

        Returns:
            tuple[Tensor, Tensor]: Float32 (float64 for a float64 model)
            logits (num_layers, B, Q, 1) and boxes (num_layers, B, Q, 4).
        """
        dtype = torch.promote_types(hidden_states.dtype, torch.float32)
        with torch.autocast(hidden_states.device.type, enabled=False):
            return super().forward(
                hidden_states.to(dtype), [r.to(dtype) for r in references]
            )

    def loss(
        self,
        hidden_states: Tensor,
        references: List[Tensor],
        enc_outputs_class: Optional[Tensor],
        enc_outputs_coord: Optional[Tensor],
        batch_data_samples: SampleList,
    ) -> Dict[str, Tensor]:
        """One-to-one losses (with the proposal losses) on the first
        ``num_queries_one2one`` queries, one-to-many losses on the rest.

        Args:
            hidden_states (Tensor): (num_layers, B, Q, C).
            references (list[Tensor]): Initial boxes and each layer's boxes,
                each (B, Q, 4).
            enc_outputs_class (Tensor): Proposal scores (B, N, 1).
            enc_outputs_coord (Tensor): Proposal boxes (B, N, 4).
            batch_data_samples (list[DetDataSample]): With ``gt_instances``.

        Returns:
            dict[str, Tensor]: The losses, computed in float32 (the
            proposal outputs are cast as :meth:`forward` casts its own);
            one-to-many ones end in ``_one2many``.
        """
        if enc_outputs_class is not None:
            enc_outputs_class = enc_outputs_class.float()
            enc_outputs_coord = enc_outputs_coord.float()
        gts = [s.gt_instances for s in batch_data_samples]
        metas = [s.metainfo for s in batch_data_samples]
        cls_scores, bbox_preds = self(hidden_states, references)
        n = self.num_queries_one2one
        losses = self.loss_by_feat(
            cls_scores[:, :, :n],
            bbox_preds[:, :, :n],
            enc_outputs_class,
            enc_outputs_coord,
            gts,
            metas,
        )
        if self.contrastive_cfg is not None:
            losses.update(
                self.loss_contrastive(
                    hidden_states[:, :, :n],
                    cls_scores[:, :, :n],
                    bbox_preds[:, :, :n],
                    gts,
                    metas,
                )
            )
        if cls_scores.shape[2] > n:
            repeated = [InstanceData.cat([gt] * self.k_one2many) for gt in gts]
            one2many = super(DeformableDETRHead, self).loss_by_feat(
                cls_scores[:, :, n:], bbox_preds[:, :, n:], repeated, metas
            )
            if self.contrastive_cfg is not None:
                one2many.update(
                    self.loss_contrastive(
                        hidden_states[:, :, n:],
                        cls_scores[:, :, n:],
                        bbox_preds[:, :, n:],
                        repeated,
                        metas,
                    )
                )
            losses.update(
                {
                    f'{key}_one2many': value * self.lambda_one2many
                    for key, value in one2many.items()
                }
            )
        return losses

    def loss_contrastive(
        self,
        hidden_states: Tensor,
        cls_scores: Tensor,
        bbox_preds: Tensor,
        gts: List[InstanceData],
        metas: List[dict],
    ) -> Dict[str, Tensor]:
        """:func:`contrastive_loss` of every decoder layer: the queries the
        head's assigner matches to targets (the same Hungarian matching as
        the layer's other losses, redone here), projected by the layer's
        MLP, pooled over the batch, labelled with their targets'
        ``classes``.

        Returns:
            dict[str, Tensor]: ``loss_con`` (last layer) and ``d{i}.loss_con``
            (the others), each times ``loss_weight``.
        """
        cfg = self.contrastive_cfg
        if any('classes' not in gt for gt in gts):
            raise KeyError(
                'contrastive_cfg needs gt_instances.classes: build the '
                'targets with RandomPatchExemplar(base_boxes=True) and '
                'PackOneShotInputs.'
            )
        num_layers = hidden_states.shape[0]
        losses = {}
        for layer in range(num_layers):
            feats, classes = [], []
            for b, (gt, meta) in enumerate(zip(gts, metas)):
                img_h, img_w = meta['img_shape']
                factor = bbox_preds.new_tensor([img_w, img_h, img_w, img_h])
                pred = InstanceData(
                    scores=cls_scores[layer, b],
                    bboxes=bbox_cxcywh_to_xyxy(bbox_preds[layer, b]) * factor,
                )
                with torch.no_grad():
                    assigned = self.assigner.assign(pred, gt, img_meta=meta)
                matched = torch.nonzero(assigned.gt_inds > 0).squeeze(-1)
                feats.append(hidden_states[layer, b, matched])
                classes.append(gt.classes[assigned.gt_inds[matched] - 1])
            projected = self.contrastive_embeds[layer](torch.cat(feats))
            loss = contrastive_loss(
                projected, torch.cat(classes), cfg['temperature']
            )
            key = (
                'loss_con' if layer == num_layers - 1 else f'd{layer}.loss_con'
            )
            losses[key] = loss * cfg['loss_weight']
        return losses

    def predict_by_feat(
        self,
        all_layers_cls_scores: Tensor,
        all_layers_bbox_preds: Tensor,
        batch_img_metas: List[Dict],
        rescale: bool = False,
    ):
        """The host's predictions from channel 0, the exemplar match (a
        stage-1 head's base-object channel is a training target only)."""
        if self.num_classes == 1:
            return super().predict_by_feat(
                all_layers_cls_scores,
                all_layers_bbox_preds,
                batch_img_metas,
                rescale,
            )
        num_classes, self.num_classes = self.num_classes, 1
        try:  # the host's top-k reads self.num_classes
            return super().predict_by_feat(
                all_layers_cls_scores[..., :1],
                all_layers_bbox_preds,
                batch_img_metas,
                rescale,
            )
        finally:
            self.num_classes = num_classes
