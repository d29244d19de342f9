"""Segmentor glue of TMT: feeds ACTE and hands its regions to the neck."""

import copy
import logging
from typing import List, Optional

import torch
from mmengine.logging import print_log
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from torch import Tensor

from xattn_mm.core import HiddenFrozenMixin
from xattn_mm.engine.checkpoint import load_checkpoint_file

from ..estimators.acte import ACTE, RegionMap
from ..necks.tma_neck import TMANeck

# Parts of a segmentor that the frozen source model needs.
_SOURCE_PARTS = ('backbone', 'neck', 'decode_head')


@MODELS.register_module()
class TMTEncoderDecoder(HiddenFrozenMixin, EncoderDecoder):
    """mmseg's ``EncoderDecoder`` with TMT's estimator between the backbone
    and a :class:`TMANeck`; only :meth:`extract_feat` changes.

    Training: the backbone features at ``estimator.in_index`` are
    clustered into regions by :class:`ACTE`, which scores each region
    against a frozen source model (same backbone, neck and decode head,
    loaded from ``source_checkpoint``): its features at that level and its
    predictions' entropy. The neck's attention takes the resulting
    :class:`RegionMap`.

    Inference (``test_with_source=False``, the default): no source model;
    in ``mask`` / ``both`` mode ACTE still clusters the current features,
    with zero priority, so the region masks stay and the bias vanishes; in
    ``bias`` mode the neck runs plain self-attention, without k-means.
    ``test_with_source=True`` runs the full estimator at test time too.

    The source model is kept out of ``nn.Module`` registration: it is not
    trained, not wrapped by DDP and not saved in checkpoints; it is rebuilt
    from ``source_checkpoint`` (a source-domain checkpoint of this
    architecture or of its vanilla twin, whose ``Feature2Pyramid`` weights
    load into the ``TMANeck``; missing TMA blocks keep their identity
    initialisation). Without ``source_checkpoint`` it copies this model's
    weights when :meth:`init_weights` runs (before ``load_from``).

    Args:
        backbone (dict): Backbone config (mmseg ViT, MiT, Swin, ...).
        decode_head (dict): Decode head config.
        neck (dict): A :class:`TMANeck` config.
        estimator (dict): An :class:`ACTE` config.
        source_checkpoint (str, optional): Local checkpoint of the
            source-domain segmentor. Defaults to None.
        source_num_classes (int, optional): Classes of the source model's
            decode head when the source label set differs (ADE20K ->
            Cityscapes); its predictions only feed the entropy. Defaults
            to None (this model's ``num_classes``).
        test_with_source (bool): Run the source model at inference.
            Defaults to False.
        **kwargs: Other ``EncoderDecoder`` arguments.
    """

    def __init__(
        self,
        backbone: dict,
        decode_head: dict,
        neck: dict,
        estimator: dict,
        source_checkpoint: Optional[str] = None,
        source_num_classes: Optional[int] = None,
        test_with_source: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(
            backbone=backbone, decode_head=decode_head, neck=neck, **kwargs
        )
        if not isinstance(self.neck, TMANeck):
            raise TypeError(
                'TMTEncoderDecoder needs neck=dict(type="TMANeck", ...), '
                f'got {type(self.neck).__name__}.'
            )
        self.estimator = MODELS.build(estimator)
        if not isinstance(self.estimator, ACTE):
            raise TypeError(
                'estimator must build an ACTE, got '
                f'{type(self.estimator).__name__}.'
            )
        if source_checkpoint is not None and not isinstance(
            source_checkpoint, str
        ):
            raise TypeError(
                'source_checkpoint must be a path or None, got '
                f'{source_checkpoint!r}.'
            )
        self.source_checkpoint = source_checkpoint
        self.test_with_source = bool(test_with_source)
        backbone = copy.deepcopy(backbone)
        backbone.pop('init_cfg', None)
        source_head = copy.deepcopy(decode_head)
        if source_num_classes is not None:
            if not isinstance(source_num_classes, int) or (
                source_num_classes < 2
            ):
                raise ValueError(
                    'source_num_classes must be an int >= 2 or None, got '
                    f'{source_num_classes!r}.'
                )
            source_head['num_classes'] = source_num_classes
        self._source_cfg = dict(
            type='EncoderDecoder',
            backbone=backbone,
            neck=copy.deepcopy(neck),
            decode_head=source_head,
        )

    @property
    def source_model(self) -> Optional[EncoderDecoder]:
        """The frozen source model, or None before it is built."""
        return self.hidden_frozen('source')

    def init_weights(self) -> None:
        """Initialise, then snapshot the source model if no checkpoint
        names it (a checkpoint is read lazily, on first use)."""
        super().init_weights()
        if self.source_checkpoint is None:
            self.build_source_model()

    def build_source_model(self) -> EncoderDecoder:
        """(Re)build the frozen source model.

        Returns:
            EncoderDecoder: The source model, in eval mode, without
            gradients, on this model's device.
        """
        source = MODELS.build(self._source_cfg)
        if self.source_checkpoint is None:
            print_log(
                'TMTEncoderDecoder: no source_checkpoint, so the source '
                'model copies the weights this model has now; set it to the '
                'source-domain checkpoint for TMT training.',
                logger='current',
                level=logging.WARNING,
            )
            # With source_num_classes the classifier differs in shape and
            # keeps its initialisation.
            target = source.state_dict()
            state = {
                k: v
                for k, v in self.state_dict().items()
                if k in target and v.shape == target[k].shape
            }
            source.load_state_dict(state, strict=False)
        else:
            self._load_source_checkpoint(source)
        return self.hide_frozen('source', source)

    def _load_source_checkpoint(self, source: EncoderDecoder) -> None:
        path = self.source_checkpoint
        checkpoint = load_checkpoint_file(path, map_location='cpu')
        state = checkpoint.get('state_dict', checkpoint)
        state = {
            k: v for k, v in state.items() if k.split('.')[0] in _SOURCE_PARTS
        }
        expected = (
            'expected a source-domain checkpoint of the same backbone and '
            'decode head'
        )
        try:
            result = source.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatches
            raise ValueError(
                f'source_checkpoint {path} does not match the segmentor '
                f'({expected}): {e}'
            ) from None
        # Only TMA blocks may be missing: they start as the identity.
        missing = [
            k for k in result.missing_keys if not k.startswith('neck.blocks.')
        ]
        if missing or result.unexpected_keys:
            raise ValueError(
                f'source_checkpoint {path} does not match the segmentor '
                f'({expected}): missing {missing[:5]}, unexpected '
                f'{result.unexpected_keys[:5]}.'
            )

    @torch.no_grad()
    def source_forward(self, inputs: Tensor):
        """Source model features and logits for ``inputs``.

        Args:
            inputs (Tensor): Preprocessed images, (B, 3, H, W).

        Returns:
            tuple: Backbone levels (each (B, C_l, H_l, W_l)) and decode
            head logits (B, num_classes, H', W').
        """
        source = self.source_model or self.build_source_model()
        features = source.backbone(inputs)
        logits = source.decode_head.forward(source.neck(features))
        return features, logits

    def estimate_regions(
        self, inputs: Tensor, features: List[Tensor]
    ) -> Optional[RegionMap]:
        """Run ACTE on this model's backbone ``features``.

        Args:
            inputs (Tensor): Preprocessed images, (B, 3, H, W).
            features (list[Tensor]): This model's backbone levels.

        Returns:
            RegionMap, optional: Regions and priorities of the batch; None
            at inference without the source model in ``bias`` mode, whose
            zero-priority bias would change nothing.
        """
        level = self.estimator.in_index
        current = features[level].detach()
        if self.training or self.test_with_source:
            source_features, logits = self.source_forward(inputs)
            return self.estimator(current, source_features[level], logits)
        if self.neck.mode == 'bias':
            return None
        return self.estimator(current)

    def extract_feat(self, inputs: Tensor) -> List[Tensor]:
        """Backbone, ACTE, then the TMA neck.

        Args:
            inputs (Tensor): Preprocessed images, (B, 3, H, W).

        Returns:
            list[Tensor]: Neck outputs for the decode head.
        """
        features = self.backbone(inputs)
        return self.neck(features, self.estimate_regions(inputs, features))
