"""IA-DETR head: focal "matches the exemplar" logit, L1 + GIoU boxes,
auxiliary and proposal losses, and the one-to-many (hybrid) branch."""

from typing import Dict, List, Optional, Tuple

import torch
from mmdet.models.dense_heads import DeformableDETRHead
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmengine.structures import InstanceData
from torch import Tensor


@MODELS.register_module()
class IADETRHead(DeformableDETRHead):
    """Deformable-DETR style head with hybrid matching (H-DETR).

    The logit layout is one sigmoid channel (``num_classes=1``): label 0
    means "an instance of the exemplar's class"; the proposal head uses the
    same channel for the same boxes. The official code keeps 3 channels
    (proposals on channel 0, matches on channel 1); the converter maps them.

    Args:
        num_queries_one2one (int): The first queries, matched one-to-one;
            the rest (if any) are matched one-to-many. :class:`IADETR` sets
            it to its ``num_queries`` (a config must not). Defaults to 300.
        k_one2many (int): Ground truth repeats for the one-to-many match.
            Defaults to 6.
        lambda_one2many (float): Weight of the one-to-many losses.
            Defaults to 1.0.
        **kwargs: :class:`~mmdet.models.dense_heads.DeformableDETRHead`
            arguments.
    """

    def __init__(
        self,
        *args,
        num_queries_one2one: int = 300,
        k_one2many: int = 6,
        lambda_one2many: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if k_one2many < 1:
            raise ValueError(f'k_one2many must be >= 1, got {k_one2many}.')
        self.num_queries_one2one = num_queries_one2one
        self.k_one2many = k_one2many
        self.lambda_one2many = lambda_one2many

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
        if cls_scores.shape[2] > n:
            repeated = [InstanceData.cat([gt] * self.k_one2many) for gt in gts]
            one2many = super(DeformableDETRHead, self).loss_by_feat(
                cls_scores[:, :, n:], bbox_preds[:, :, n:], repeated, metas
            )
            losses.update(
                {
                    f'{key}_one2many': value * self.lambda_one2many
                    for key, value in one2many.items()
                }
            )
        return losses
