"""Fine-tuning regularisers that StochCA is complementary to (its paper's
Table 4 and Sec. 5): L2-SP, batch spectral shrinkage and MIRO, selectable in
a config with or without the StochCA backbone."""

import contextlib
import copy
import math
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor, nn

from xattn_mm.core import HiddenFrozenMixin


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


def _inner_vit(backbone: nn.Module) -> nn.Module:
    """The ViT StochCA wraps, or the backbone itself."""
    inner = getattr(backbone, 'backbone', None)
    return inner if isinstance(inner, nn.Module) else backbone


@MODELS.register_module()
class MIRORegularizer(HiddenFrozenMixin, nn.Module):
    """MIRO (Cha et al., ECCV 2022, "Domain Generalization by
    Mutual-Information Regularization with Pretrained Models"): a
    variational lower bound of the mutual information between the student's
    intermediate features f and the frozen pretrained model's z (the
    oracle), ``loss_weight * sum_l mean((mu(f_l) - z_l)^2 / var_l +
    log var_l) / 2``, with the mean encoder mu the identity and var_l a
    learnt per-channel variance, ``softplus(b_l) + eps``, ``b_l`` starting at
    ``softplus^-1(init_var - eps)`` (kakaobrain/miro 5238455,
    ``domainbed/algorithms/miro.py``).

    Features (MIRO's ``feat_layers='stem_block'`` for a ViT-B): the patch
    projection's output and the output of the last block of each quarter
    of the blocks (blocks 2, 5, 8, 11 of 12; before the final norm), read
    by forward hooks on ``patch_embed.projection`` and ``layers[i].ffn``
    during the classifier's own forward, so with StochCA they are the
    features of the step's drawn cross-attention blocks. The oracle is the
    (inner) ViT as :meth:`take_reference` finds it after the classifier's
    ``init_weights``: StochCA's frozen teacher when the backbone has one
    (the same pretrained weights, held once), else a frozen copy kept out of
    ``state_dict()`` and the optimizer. MIRO trains the variance encoders at
    10 x the lr (``lr_mult``): the configs set it with ``paramwise_cfg``
    (``custom_keys={'regularizers.miro': dict(lr_mult=10.0)}``).

    Args:
        loss_weight (float): lambda. Defaults to 0.1 (MIRO's default).
        init_var (float): Initial variance. Defaults to 0.1.
        eps (float): Variance floor. Defaults to 1e-5.
        feat_layers (Sequence[int], optional): Block indices whose outputs
            are regularised (the patch projection always is). Defaults to
            None: the last block of each quarter.
    """

    def __init__(
        self,
        loss_weight: float = 0.1,
        init_var: float = 0.1,
        eps: float = 1e-5,
        feat_layers: Optional[Sequence[int]] = None,
    ) -> None:
        super().__init__()
        if loss_weight < 0:
            raise ValueError(f'loss_weight must be >= 0, got {loss_weight}.')
        if not init_var > eps > 0:
            raise ValueError(
                f'MIRO needs init_var > eps > 0, got {init_var}, {eps}.'
            )
        self.loss_weight = loss_weight
        self.init_var = init_var
        self.eps = eps
        self.feat_layers = None if feat_layers is None else tuple(feat_layers)
        self.var_bias = nn.ParameterList()
        self._student: List[Tensor] = []
        self._oracle: List[Tensor] = []

    def setup(self, classifier: ImageClassifier) -> None:
        """Create the variance encoders for ``classifier``'s ViT (called by
        :class:`RegularizedImageClassifier` once its backbone is built, so
        they are in the optimizer and DDP)."""
        vit = _inner_vit(classifier.backbone)
        layers = getattr(vit, 'layers', None)
        if layers is None or not hasattr(vit, 'patch_embed'):
            raise TypeError(
                'MIRORegularizer needs an mmpretrain VisionTransformer '
                f'backbone (or StochCA around one), got {type(vit).__name__}.'
            )
        num = len(layers)
        if self.feat_layers is None:
            quarters = {max(0, num * (q + 1) // 4 - 1) for q in range(4)}
            self.feat_layers = tuple(sorted(quarters))
        bad = [i for i in self.feat_layers if not 0 <= i < num]
        if bad:
            raise ValueError(
                f'feat_layers {bad} are not blocks of the {num}-block ViT.'
            )
        dims = vit.embed_dims
        start = math.log(math.expm1(self.init_var - self.eps))
        self.var_bias = nn.ParameterList(
            nn.Parameter(torch.full((dims,), start))
            for _ in range(1 + len(self.feat_layers))
        )

    def take_reference(self, backbone: nn.Module) -> None:
        """Keep the oracle: StochCA's teacher, else a frozen copy of the
        (inner) ViT as it is now (after the pretrained weights loaded)."""
        oracle = getattr(backbone, 'teacher', None)
        if oracle is None:
            oracle = copy.deepcopy(_inner_vit(backbone))
        self.hide_frozen('oracle', oracle)

    @contextlib.contextmanager
    def _hooks(self, vit: nn.Module, store: List[Tensor]):
        modules = [vit.patch_embed.projection]
        modules += [vit.layers[i].ffn for i in self.feat_layers]
        handles = [
            m.register_forward_hook(lambda m, i, out: store.append(out))
            for m in modules
        ]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def capture(self, classifier: ImageClassifier, inputs: Tensor):
        """Record the student's features during the forward run inside the
        ``with`` block, and the oracle's on ``inputs``."""
        oracle = self.hidden_frozen('oracle')
        if oracle is None:
            raise RuntimeError(
                "MIRORegularizer has no oracle: call the classifier's "
                'init_weights() first (mmengine Runner does).'
            )
        self._student, self._oracle = [], []
        with torch.no_grad(), self._hooks(oracle, self._oracle):
            oracle(inputs)
        with self._hooks(_inner_vit(classifier.backbone), self._student):
            yield

    def forward(self, classifier: ImageClassifier, feats: tuple) -> Tensor:
        """The penalty on the features recorded by :meth:`capture`.

        Args:
            classifier (ImageClassifier): The model.
            feats (tuple[Tensor]): Its outputs (unused).

        Returns:
            Tensor: Scalar loss (float32).
        """
        student, oracle = self._student, self._oracle
        if len(student) != len(self.var_bias) or len(oracle) != len(student):
            raise RuntimeError(
                'MIRORegularizer recorded no features for this step: the '
                'classifier must run its forward inside capture().'
            )
        total = 0.0
        for f, z, bias in zip(student, oracle, self.var_bias):
            shape = (1, -1, 1, 1) if f.dim() == 4 else (1, 1, -1)
            var = (F.softplus(bias) + self.eps).view(shape)
            f, z = f.float(), z.float()
            total = total + ((f - z).square() / var + var.log()).mean() / 2
        self._student, self._oracle = [], []
        return self.loss_weight * total


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
        for reg in self.regularizers.values():
            if hasattr(reg, 'setup'):
                reg.setup(self)

    def init_weights(self) -> None:
        """Initialise, then take the L2-SP / MIRO references from the
        result."""
        first_time = not self.is_init
        super().init_weights()
        if first_time:
            for reg in self.regularizers.values():
                if hasattr(reg, 'take_reference'):
                    reg.take_reference(self.backbone)

    def loss(self, inputs: Tensor, data_samples: List[DataSample]) -> dict:
        """Head losses plus one ``loss_<name>`` per regulariser.

        Args:
            inputs (Tensor): Images, (B, 3, H, W).
            data_samples (list[DataSample]): Annotations.

        Returns:
            dict[str, Tensor]: Losses.
        """
        with contextlib.ExitStack() as stack:
            for reg in self.regularizers.values():
                if hasattr(reg, 'capture'):
                    stack.enter_context(reg.capture(self, inputs))
            feats = self.extract_feat(inputs)
        losses = self.head.loss(feats, data_samples)
        for name, reg in self.regularizers.items():
            losses[f'loss_{name}'] = reg(self, feats)
        return losses
