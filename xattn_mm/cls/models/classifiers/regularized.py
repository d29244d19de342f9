"""Fine-tuning regularisers that StochCA is complementary to (its paper's
Table 4): L2-SP and batch spectral shrinkage, selectable in a config with or
without the StochCA backbone."""

from typing import Dict, List, Optional

import torch
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor, nn


@MODELS.register_module()
class L2SPRegularizer(nn.Module):
    """L2-SP (Li et al., ICML 2018): pull the backbone toward its starting
    point, ``loss_weight * 0.5 * sum ||theta - theta_0||^2`` over the
    trainable backbone parameters, theta_0 taken when the classifier's
    ``init_weights`` has loaded the pretrained weights.

    The reference is not a buffer: checkpoints stay the size of the model,
    and a resumed run takes it again from the same initialisation (mmengine's
    Runner initialises before it resumes). As in L2-SP, configs turn the
    backbone's weight decay off (``paramwise_cfg``) so the two do not
    compete.

    Args:
        loss_weight (float): Weight (alpha in the paper, beta in StochCA's
            code). Defaults to 0.01 (StochCA's default).
    """

    def __init__(self, loss_weight: float = 0.01) -> None:
        super().__init__()
        if loss_weight < 0:
            raise ValueError(f'loss_weight must be >= 0, got {loss_weight}.')
        self.loss_weight = loss_weight
        self._reference: List[Dict[str, Tensor]] = []

    def take_reference(self, backbone: nn.Module) -> None:
        """Copy the backbone's trainable parameters as theta_0."""
        self._reference = [
            {
                name: param.detach().clone()
                for name, param in backbone.named_parameters()
                if param.requires_grad
            }
        ]

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        if self._reference:
            self._reference = [
                {k: fn(v) for k, v in self._reference[0].items()}
            ]
        return self

    def forward(self, classifier: ImageClassifier, feats: tuple) -> Tensor:
        """The penalty on ``classifier.backbone``.

        Args:
            classifier (ImageClassifier): The model.
            feats (tuple[Tensor]): Its features (unused).

        Returns:
            Tensor: Scalar loss.
        """
        if not self._reference:
            raise RuntimeError(
                'L2SPRegularizer has no reference weights: call the '
                "classifier's init_weights() first (mmengine Runner does)."
            )
        reference = self._reference[0]
        terms = [
            (param - reference[name]).square().sum()
            for name, param in classifier.backbone.named_parameters()
            if name in reference
        ]
        return self.loss_weight * 0.5 * torch.stack(terms).sum()


@MODELS.register_module()
class BSSRegularizer(nn.Module):
    """Batch spectral shrinkage (Chen et al., NeurIPS 2019): penalise the
    ``num_singular`` smallest singular values of the batch's pre-logit
    feature matrix (B, C), ``loss_weight * sum_i sigma_{-i}^2``.

    Args:
        loss_weight (float): Weight (eta). Defaults to 0.001.
        num_singular (int): How many of the smallest singular values.
            Defaults to 1.
    """

    def __init__(self, loss_weight: float = 0.001, num_singular: int = 1):
        super().__init__()
        if loss_weight < 0:
            raise ValueError(f'loss_weight must be >= 0, got {loss_weight}.')
        if not isinstance(num_singular, int) or num_singular < 1:
            raise ValueError(
                f'num_singular must be a positive int, got {num_singular!r}.'
            )
        self.loss_weight = loss_weight
        self.num_singular = num_singular

    def forward(self, classifier: ImageClassifier, feats: tuple) -> Tensor:
        """The penalty on the features the head classifies.

        Args:
            classifier (ImageClassifier): The model.
            feats (tuple[Tensor]): Backbone (and neck) outputs.

        Returns:
            Tensor: Scalar loss.
        """
        features = classifier.head.pre_logits(feats)
        if isinstance(features, (tuple, list)):  # DeiT: cls + dist tokens
            features = torch.cat(list(features), dim=-1)
        singular = torch.linalg.svdvals(features.flatten(1).float())
        return self.loss_weight * singular[-self.num_singular :].square().sum()


@MODELS.register_module()
class RegularizedImageClassifier(ImageClassifier):
    """:class:`ImageClassifier` whose training loss adds regularisers.

    Each regulariser adds ``loss_<name>`` to the head's losses, where
    ``<name>`` is its key in ``regularizers``.

    Args:
        regularizers (dict[str, dict], optional): Name to regulariser config,
            e.g. ``dict(l2sp=dict(type='L2SPRegularizer', loss_weight=0.01),
            bss=dict(type='BSSRegularizer'))``. Defaults to None (plain
            ImageClassifier).
        **kwargs: :class:`ImageClassifier` arguments.
    """

    def __init__(self, regularizers: Optional[dict] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        regularizers = regularizers or {}
        if not isinstance(regularizers, dict):
            raise TypeError(
                'regularizers must map names to configs, e.g. '
                "dict(l2sp=dict(type='L2SPRegularizer')), got "
                f'{type(regularizers).__name__}.'
            )
        self.regularizers = nn.ModuleDict(
            {name: MODELS.build(cfg) for name, cfg in regularizers.items()}
        )

    def init_weights(self) -> None:
        """Initialise, then take L2-SP references from the result."""
        first_time = not self.is_init
        super().init_weights()
        if first_time:
            for reg in self.regularizers.values():
                if isinstance(reg, L2SPRegularizer):
                    reg.take_reference(self.backbone)

    def loss(self, inputs: Tensor, data_samples: List[DataSample]) -> dict:
        """Head losses plus one ``loss_<name>`` per regulariser.

        Args:
            inputs (Tensor): Images, (B, 3, H, W).
            data_samples (list[DataSample]): Annotations.

        Returns:
            dict[str, Tensor]: Losses.
        """
        feats = self.extract_feat(inputs)
        losses = self.head.loss(feats, data_samples)
        for name, reg in self.regularizers.items():
            losses[f'loss_{name}'] = reg(self, feats)
        return losses
