"""Unsupervised domain adaptation classifier of DACSM: a DAT backbone and a
CSM head, trained on paired (source, target) batches (CDTrans recipe) or,
in stage 1, on source batches alone."""

from typing import Dict, List, Optional, Sequence, Union

import torch
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.models.losses.cross_entropy_loss import soft_cross_entropy
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor

from ..utils import rescale_images

LOSS_BRANCHES = ('target', 'cross')
SCALE_SAMPLINGS = ('random', 'cycle')


@MODELS.register_module()
class UDAClassifier(ImageClassifier):
    """Image classifier for unsupervised domain adaptation (DACSM).

    Trained on a plain batch (stage 1), it is a source-only classifier: each
    source image is zoomed by one of ``scales`` and its CSM loss uses the
    matching sub-center. Trained on a paired batch (stage 2), the DAT
    backbone runs its source, target and cross branches and the loss is
    (CDTrans):

    - ``loss_source``: the CSM loss of the source branch on the source
      labels (sub-center of each image's scale);
    - ``loss_target``: cross-entropy of the ``pseudo_label_branch`` logits
      (max over the sub-centers) on the target pseudo-labels that
      :class:`PseudoLabelHook` assigned; target ground truth is never read;
    - ``loss_distill``: soft cross-entropy from the cross branch (teacher)
      to the target branch (student).

    Inference (``predict``, ``tensor``) runs the target branch only: the
    plain ViT forward and the head's max over the sub-centers.

    Args:
        backbone (dict): A :class:`DAT` config.
        head (dict): A :class:`CSMHead` config, ``num_subcenters`` equal to
            the number of ``scales``.
        scales (Sequence[float]): Source zoom factors, one per sub-center.
            Defaults to (0.5, 1.0, 1.5).
        scale_sampling (str): How a source image gets its scale:
            ``'random'`` (uniform, on the CPU generator) or ``'cycle'``
            (image ``i`` of a batch takes scale ``i mod K``). Defaults to
            ``'random'``.
        pseudo_label_branch (str): Branch trained on pseudo-labels,
            ``'target'`` (CDTrans) or ``'cross'``. Defaults to
            ``'target'``.
        loss_weights (dict, optional): Weights of ``source``, ``target``
            and ``distill``. Defaults to 1 each.
        detach_teacher (bool): Stop the distillation gradient into the
            cross branch. Defaults to False (CDTrans).
        **kwargs: :class:`ImageClassifier` arguments (``neck``,
            ``data_preprocessor``, ``init_cfg``, ...).
    """

    def __init__(
        self,
        backbone: dict,
        head: dict,
        scales: Sequence[float] = (0.5, 1.0, 1.5),
        scale_sampling: str = 'random',
        pseudo_label_branch: str = 'target',
        loss_weights: Optional[Dict[str, float]] = None,
        detach_teacher: bool = False,
        data_preprocessor: Optional[dict] = None,
        **kwargs,
    ) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type='UDADataPreprocessor')
        super().__init__(
            backbone=backbone,
            head=head,
            data_preprocessor=data_preprocessor,
            **kwargs,
        )
        if not hasattr(self.backbone, 'forward_branches'):
            raise TypeError(
                'UDAClassifier needs a backbone with forward_branches (DAT), '
                f'got {type(self.backbone).__name__}.'
            )
        scales = tuple(float(s) for s in scales)
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(
                f'scales must be positive zoom factors, got {scales}.'
            )
        num_subcenters = getattr(self.head, 'num_subcenters', None)
        if num_subcenters != len(scales):
            raise ValueError(
                f'The head has {num_subcenters} sub-centers per class but '
                f'{len(scales)} scales are given; CSM needs one sub-center '
                'per scale.'
            )
        if scale_sampling not in SCALE_SAMPLINGS:
            raise ValueError(
                f'scale_sampling must be one of {SCALE_SAMPLINGS}, got '
                f'{scale_sampling!r}.'
            )
        if pseudo_label_branch not in LOSS_BRANCHES:
            raise ValueError(
                f'pseudo_label_branch must be one of {LOSS_BRANCHES}, got '
                f'{pseudo_label_branch!r}.'
            )
        weights = dict(source=1.0, target=1.0, distill=1.0)
        unknown = set(loss_weights or {}) - set(weights)
        if unknown:
            raise ValueError(
                f'loss_weights keys must be in {sorted(weights)}, got '
                f'{sorted(unknown)}.'
            )
        weights.update(loss_weights or {})
        self.scales = scales
        self.scale_sampling = scale_sampling
        self.pseudo_label_branch = pseudo_label_branch
        self.loss_weights = weights
        self.detach_teacher = detach_teacher

    def draw_scales(self, batch_size: int) -> Tensor:
        """Scale index of each source image, long (batch_size,), on the
        CPU."""
        num = len(self.scales)
        if self.scale_sampling == 'cycle':
            return torch.arange(batch_size) % num
        return torch.randint(num, (batch_size,))

    def _zoom_source(self, images: Tensor) -> tuple:
        index = self.draw_scales(images.shape[0])
        factors = torch.tensor(self.scales)[index]
        return rescale_images(images, factors), index

    def _weighted(self, name: str, loss: Tensor) -> Tensor:
        return self.loss_weights[name] * loss

    def loss(
        self,
        inputs: Union[Tensor, Dict[str, Tensor]],
        data_samples: Union[List[DataSample], Dict[str, list]],
    ) -> dict:
        """Losses of a plain (source-only) or a paired batch.

        Args:
            inputs (Tensor | dict): Source images (B, 3, H, W), or a dict
                with ``source`` and ``target`` images of the same shape.
            data_samples (list | dict): Source samples with ``gt_label``, or
                a dict with ``source`` samples and ``target`` samples with
                ``pseudo_label``.

        Returns:
            dict[str, Tensor]: Weighted loss terms.
        """
        if not isinstance(inputs, dict):
            images, index = self._zoom_source(inputs)
            feats = self.extract_feat(images)
            losses = self.head.loss(feats, data_samples, subcenter_index=index)
            return {'loss_source': self._weighted('source', losses['loss'])}

        targets = data_samples['target']
        if not all('pseudo_label' in s for s in targets):
            raise KeyError(
                'Target samples of a paired batch need pseudo_label, which '
                'PseudoLabelHook assigns (add it to custom_hooks).'
            )
        source, index = self._zoom_source(inputs['source'])
        feats = self.backbone.forward_branches(source, inputs['target'])
        if self.with_neck:
            feats = tuple(self.neck(f) for f in feats)
        source_feats, target_feats, cross_feats = feats
        losses = self.head.loss(
            source_feats, data_samples['source'], subcenter_index=index
        )
        target_logits = self.head(target_feats)
        cross_logits = self.head(cross_feats)
        pseudo = torch.cat([s.pseudo_label for s in targets])
        pseudo = pseudo.to(target_logits.device, non_blocking=True)
        branch = (
            target_logits
            if self.pseudo_label_branch == 'target'
            else cross_logits
        )
        loss_target = self.head.loss_module(
            branch, pseudo, avg_factor=branch.shape[0]
        )
        # -sum softmax(cross) * log_softmax(target), batch mean; CDTrans
        # does not detach the teacher (``detach_teacher``)
        teacher = (
            cross_logits.detach() if self.detach_teacher else cross_logits
        )
        loss_distill = soft_cross_entropy(target_logits, teacher.softmax(-1))
        return {
            'loss_source': self._weighted('source', losses['loss']),
            'loss_target': self._weighted('target', loss_target),
            'loss_distill': self._weighted('distill', loss_distill),
        }
