"""Batch (target, exemplar) pairs onto one padded canvas."""

from typing import Dict, List, Optional, Sequence, Tuple

import torch.nn.functional as F
from mmdet.models.data_preprocessors import DetDataPreprocessor
from mmdet.registry import MODELS
from mmdet.structures import OptSampleList
from torch import Tensor


@MODELS.register_module()
class OneShotDetDataPreprocessor(DetDataPreprocessor):
    """Normalise and pad targets as :class:`DetDataPreprocessor` does, and
    exemplars with the same statistics onto the same canvas (top-left).

    Input ``data['inputs']`` is ``dict(target=[...], exemplar=[...])`` (one
    (3, h, w) image each per sample). Output ``inputs`` is
    ``dict(target=Tensor, exemplar=Tensor)``, both (B, 3, H, W), with
    ``batch_input_shape`` = (H, W) and ``exemplar_shape`` = (h, w) of each
    exemplar in the data samples' metainfo. Batch augmentations are not
    supported (they would move the target without its exemplar).

    Several exemplars per sample (the official IA-DETR test protocol, see
    :class:`PackOneShotInputs`): each sample's exemplar is a (K, 3, h, w)
    tensor, ``K`` the same for the whole batch, with ``exemplar_shapes`` (K
    (h, w)) in its metainfo (missing: the full (h, w) each). Each exemplar
    is cut to its shape and put on the canvas; the output ``exemplar`` is
    (B, K, 3, H, W) and ``exemplar_shapes`` stays in the metainfo.

    Args:
        non_blocking (bool): Copy the images to the device asynchronously
            (overlapping with compute when the dataloader pins memory).
            Defaults to True (the host's default is False).
        *args, **kwargs: :class:`DetDataPreprocessor` arguments.
    """

    def __init__(self, *args, non_blocking: bool = True, **kwargs) -> None:
        super().__init__(*args, non_blocking=non_blocking, **kwargs)

    def forward(self, data: dict, training: bool = False) -> Dict:
        inputs = data.get('inputs')
        if not isinstance(inputs, dict) or set(inputs) != {
            'target',
            'exemplar',
        }:
            raise TypeError(
                "data['inputs'] must be dict(target=[...], exemplar=[...]) "
                'for one-shot detection pairs.'
            )
        if self.batch_augments:
            raise ValueError(
                'OneShotDetDataPreprocessor does not support batch_augments.'
            )
        targets, exemplars = inputs['target'], inputs['exemplar']
        if len(targets) != len(exemplars):
            raise ValueError(
                f'{len(targets)} targets but {len(exemplars)} '
                'exemplars: each sample needs one of each.'
            )
        out = super().forward(
            dict(inputs=targets, data_samples=data.get('data_samples')),
            training,
        )
        target, samples = out['inputs'], out['data_samples']
        groups = self._split_exemplars(exemplars, samples)
        multi = groups is not None
        if not multi:
            groups = [[e] for e in exemplars]
        groups = [
            [self._normalise(self.cast_data(e)) for e in group]
            for group in groups
        ]
        flat = [e for group in groups for e in group]
        div = self.pad_size_divisor
        height = max(target.shape[-2], *(e.shape[-2] for e in flat))
        width = max(target.shape[-1], *(e.shape[-1] for e in flat))
        height, width = -(-height // div) * div, -(-width // div) * div
        target = F.pad(
            target,
            (0, width - target.shape[-1], 0, height - target.shape[-2]),
            value=self.pad_value,
        )
        exemplar = target.new_full(
            (len(groups), len(groups[0]), 3, height, width), self.pad_value
        )
        for i, group in enumerate(groups):
            for j, e in enumerate(group):
                exemplar[i, j, :, : e.shape[-2], : e.shape[-1]] = e
        if samples is not None:
            for sample, group in zip(samples, groups):
                sample.set_metainfo(dict(batch_input_shape=(height, width)))
                shapes = tuple(tuple(e.shape[-2:]) for e in group)
                sample.set_metainfo(
                    dict(exemplar_shapes=shapes)
                    if multi
                    else dict(exemplar_shape=shapes[0])
                )
        if not multi:
            exemplar = exemplar[:, 0]
        return dict(
            inputs=dict(target=target, exemplar=exemplar), data_samples=samples
        )

    def _normalise(self, img: Tensor) -> Tensor:
        if self._channel_conversion:
            img = img[[2, 1, 0], ...]
        return (img.float() - self.mean) / self.std

    @staticmethod
    def _split_exemplars(
        exemplars: Sequence[Tensor], samples: OptSampleList
    ) -> Optional[List[List[Tensor]]]:
        """Each sample's (K, 3, h, w) exemplars cut to their shapes, or
        None when every sample has one (3, h, w) exemplar."""
        dims = {e.dim() for e in exemplars}
        if dims == {3}:
            return None
        if dims != {4}:
            raise ValueError(
                'exemplars must all be (3, h, w) images or all (K, 3, h, w) '
                f'stacks, got {sorted(dims)}-dimensional tensors.'
            )
        counts = {len(e) for e in exemplars}
        if len(counts) != 1 or 0 in counts:
            raise ValueError(
                'every sample of a batch needs the same number K >= 1 of '
                f'exemplars, got {sorted(counts)}.'
            )
        groups = []
        for i, stack in enumerate(exemplars):
            full: Tuple[int, int] = tuple(stack.shape[-2:])
            shapes = [full] * len(stack)
            if samples is not None:
                shapes = samples[i].metainfo.get('exemplar_shapes', shapes)
            if len(shapes) != len(stack):
                raise ValueError(
                    f'sample {i} has {len(stack)} exemplars but '
                    f'{len(shapes)} exemplar_shapes.'
                )
            groups.append([e[:, :h, :w] for e, (h, w) in zip(stack, shapes)])
        return groups
