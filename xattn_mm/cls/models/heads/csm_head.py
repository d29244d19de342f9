"""CSM (cross-scale matching) head of DACSM: a cosine classifier with one
sub-center per class and input scale."""

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor, nn


@MODELS.register_module()
class CSMHead(ClsHead):
    """Sub-center cosine classifier for cross-scale matching.

    Class ``c`` keeps ``num_subcenters`` unit weight vectors; sub-center
    ``k`` learns the class at input scale ``k``. A logit is ``scale`` times
    the cosine between the L2-normalised feature and a sub-center. Source
    samples, whose scale is known, are trained on the logits of their own
    sub-center (:meth:`loss` with ``subcenter_index``); target samples and
    predictions take, per class, the most compatible scale: the maximum
    over the sub-centers (:meth:`forward`). The logits, hence every loss
    on them, are float32 under mixed precision.

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Feature channels.
        num_subcenters (int): Sub-centers per class, one per input scale.
            Defaults to 3.
        scale (float): Factor on the cosine logits. Defaults to 16.
        loss (dict): Classification loss. Defaults to label-smoothed
            cross-entropy (smoothing 0.1).
        init_cfg (dict, optional): Defaults to a normal init (std 0.01) of
            the sub-center weights.
        **kwargs: Other :class:`ClsHead` arguments (``topk``, ``cal_acc``).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        num_subcenters: int = 3,
        scale: float = 16.0,
        loss: Optional[dict] = None,
        init_cfg: Optional[dict] = None,
        **kwargs,
    ) -> None:
        if loss is None:
            loss = dict(
                type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'
            )
        if init_cfg is None:
            init_cfg = dict(type='Normal', layer='Linear', std=0.01)
        super().__init__(loss=loss, init_cfg=init_cfg, **kwargs)
        for name, value in (
            ('num_classes', num_classes),
            ('in_channels', in_channels),
            ('num_subcenters', num_subcenters),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f'{name} must be an int, got {value!r}.')
            if value <= 0:
                raise ValueError(f'{name} must be positive, got {value}.')
        if scale <= 0:
            raise ValueError(f'scale must be positive, got {scale}.')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.num_subcenters = num_subcenters
        self.scale = float(scale)
        # Row c * num_subcenters + k is sub-center k of class c.
        self.fc = nn.Linear(
            in_channels, num_classes * num_subcenters, bias=False
        )

    def subcenter_logits(self, feats: Tuple[Tensor]) -> Tensor:
        """Cosine logits against every sub-center.

        Args:
            feats (tuple[Tensor]): Backbone outputs; the last is (B, C).

        Returns:
            Tensor: Shape (B, num_classes, num_subcenters), float32 (also
            under autocast).
        """
        features = self.pre_logits(feats)
        # float32 by design, autocast or not: F.normalize's 1e-12 floor is 0
        # in fp16, and every loss downstream takes these logits.
        with torch.autocast(features.device.type, enabled=False):
            features = F.normalize(features.float(), dim=-1)
            weight = F.normalize(self.fc.weight.float(), dim=-1)
            logits = self.scale * features @ weight.t()
        return logits.unflatten(-1, (self.num_classes, self.num_subcenters))

    def forward(self, feats: Tuple[Tensor]) -> Tensor:
        """Class logits at the most compatible scale (max over the
        sub-centers), (B, num_classes)."""
        return self.subcenter_logits(feats).amax(dim=-1)

    def loss(
        self,
        feats: Tuple[Tensor],
        data_samples: List[DataSample],
        subcenter_index: Optional[Tensor] = None,
        **kwargs,
    ) -> dict:
        """Classification loss.

        Args:
            feats (tuple[Tensor]): Backbone outputs; the last is (B, C).
            data_samples (list[DataSample]): With ``gt_label``.
            subcenter_index (Tensor, optional): Long (B,), on the CPU (its
                range check then makes no device sync), the scale index of
                each sample: its loss uses that sub-center's logits.
                Defaults to None (max over the sub-centers).
            **kwargs: Passed to the loss module.

        Returns:
            dict[str, Tensor]: ``loss`` (and accuracies with ``cal_acc``).
        """
        if subcenter_index is None:
            return super().loss(feats, data_samples, **kwargs)
        logits = self.subcenter_logits(feats)
        # Checked on the CPU, where the classifier draws it: no sync.
        index = subcenter_index.cpu().long()
        if index.shape != logits.shape[:1] or not bool(
            ((index >= 0) & (index < self.num_subcenters)).all()
        ):
            raise ValueError(
                'subcenter_index must hold one index in [0, '
                f'{self.num_subcenters}) per sample, got {index.tolist()}.'
            )
        index = index.to(logits.device, non_blocking=True)
        index = index[:, None, None].expand(-1, self.num_classes, 1)
        logits = torch.gather(logits, 2, index).squeeze(2)
        return self._get_loss(logits, data_samples, **kwargs)
