"""Batch (target, exemplar) pairs onto one padded canvas."""

from typing import Dict

import torch.nn.functional as F
from mmdet.models.data_preprocessors import DetDataPreprocessor
from mmdet.registry import MODELS


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
    """

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
        exemplars = [self.cast_data(e) for e in exemplars]
        if self._channel_conversion:
            exemplars = [e[[2, 1, 0], ...] for e in exemplars]
        exemplars = [(e.float() - self.mean) / self.std for e in exemplars]
        div = self.pad_size_divisor
        height = max(target.shape[-2], *(e.shape[-2] for e in exemplars))
        width = max(target.shape[-1], *(e.shape[-1] for e in exemplars))
        height, width = -(-height // div) * div, -(-width // div) * div
        target = F.pad(
            target,
            (0, width - target.shape[-1], 0, height - target.shape[-2]),
            value=self.pad_value,
        )
        exemplar = target.new_full(
            (len(exemplars), 3, height, width), self.pad_value
        )
        for i, e in enumerate(exemplars):
            exemplar[i, :, : e.shape[-2], : e.shape[-1]] = e
        if samples is not None:
            for sample, e in zip(samples, exemplars):
                sample.set_metainfo(
                    dict(
                        batch_input_shape=(height, width),
                        exemplar_shape=tuple(e.shape[-2:]),
                    )
                )
        return dict(
            inputs=dict(target=target, exemplar=exemplar), data_samples=samples
        )
