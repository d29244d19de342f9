"""Paired (source, target) samples for unsupervised domain adaptation."""

import copy
from typing import Sequence, Union

import numpy as np
import torch
from mmengine.dataset import BaseDataset, Compose
from mmpretrain.registry import DATASETS, TRANSFORMS

from xattn_mm.engine.pipeline import apply_pipeline, build_dataset

LENGTHS = ('target', 'source')
# Annotation keys that carry a label; never shown to the model for targets.
_LABEL_KEYS = ('gt_label', 'gt_score', 'gt_label_score')


def _without_labels(info: dict) -> dict:
    return {k: v for k, v in info.items() if k not in _LABEL_KEYS}


class _PipelineView:
    """A dataset read through another pipeline, labels removed (feature
    extraction for the pseudo-label memory banks)."""

    def __init__(self, dataset: BaseDataset, pipeline: Compose) -> None:
        self.dataset = dataset
        self.pipeline = pipeline

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> dict:
        info = _without_labels(self.dataset.get_data_info(idx))
        return apply_pipeline(self.pipeline, info)


@DATASETS.register_module()
class UDAPairDataset:
    """Pairs of a labelled source sample and an unlabelled target sample.

    Item ``i`` is ``dict(source=..., target=...)``, each the output of its
    own dataset's pipeline. The target's annotation loses every label key
    before its pipeline runs, so target ground truth never reaches the
    model; instead its data sample carries ``pseudo_label``, assigned with
    the pairs by :meth:`set_pairs` (:class:`PseudoLabelHook` does so before
    training and every ``interval`` epochs).

    The length is fixed (``length``) so that samplers and iteration-based
    schedules are unaffected by refreshes; epoch ``e`` walks the current
    pairs in a permutation drawn from ``seed + e`` (:meth:`set_epoch`),
    repeated or truncated to the length.

    Args:
        source (dict | BaseDataset): Labelled source dataset.
        target (dict | BaseDataset): Target dataset, same classes.
        extract_pipeline (list[dict]): Test-time pipeline used to extract the
            memory-bank features of both sets.
        length (str | int): Samples per epoch: ``'target'`` (the target set
            size), ``'source'`` or a positive int. Defaults to ``'target'``.
        seed (int): Seed of the per-epoch pair order. Defaults to 0.
    """

    def __init__(
        self,
        source: Union[dict, BaseDataset],
        target: Union[dict, BaseDataset],
        extract_pipeline: Sequence[dict],
        length: Union[str, int] = 'target',
        seed: int = 0,
    ) -> None:
        self.source = (
            build_dataset(DATASETS, source)
            if isinstance(source, dict)
            else source
        )
        self.target = (
            build_dataset(DATASETS, target)
            if isinstance(target, dict)
            else target
        )
        source_classes = self.source.metainfo.get('classes')
        target_classes = self.target.metainfo.get('classes')
        if list(source_classes or []) != list(target_classes or []):
            raise ValueError(
                'source and target datasets must list the same classes in '
                f'the same order, got {source_classes} and {target_classes}.'
            )
        if not (
            length in LENGTHS
            or (
                isinstance(length, int)
                and not isinstance(length, bool)
                and length > 0
            )
        ):
            raise ValueError(
                f'length must be one of {LENGTHS} or a positive int, got '
                f'{length!r}.'
            )
        # Built here with mmpretrain's registry: nested dataset builds
        # leave no default scope behind.
        self.extract_pipeline = Compose(
            [
                TRANSFORMS.build(t) if isinstance(t, dict) else t
                for t in extract_pipeline
            ]
        )
        self.length = length
        self.seed = seed
        self.epoch = 0
        self.source_indices = np.zeros(0, dtype=np.int64)
        self.target_indices = np.zeros(0, dtype=np.int64)
        self.pseudo_labels = np.zeros(0, dtype=np.int64)
        self._order = np.zeros(0, dtype=np.int64)

    @property
    def metainfo(self) -> dict:
        """The source dataset's meta information."""
        return copy.deepcopy(self.source.metainfo)

    def full_init(self) -> None:
        """Load both datasets."""
        self.source.full_init()
        self.target.full_init()

    def __len__(self) -> int:
        if self.length == 'target':
            return len(self.target)
        if self.length == 'source':
            return len(self.source)
        return self.length

    @property
    def num_pairs(self) -> int:
        """Number of pairs currently set."""
        return len(self.source_indices)

    def extraction_set(self, domain: str) -> _PipelineView:
        """The ``'source'`` or ``'target'`` set through
        ``extract_pipeline``, without labels, in dataset order."""
        if domain not in ('source', 'target'):
            raise ValueError(
                f"domain must be 'source' or 'target', got {domain!r}."
            )
        return _PipelineView(getattr(self, domain), self.extract_pipeline)

    def set_pairs(
        self,
        source_indices: Sequence[int],
        target_indices: Sequence[int],
        pseudo_labels: Sequence[int],
    ) -> None:
        """Replace the pairs.

        Args:
            source_indices (Sequence[int]): Source index of every pair.
            target_indices (Sequence[int]): Target index of every pair.
            pseudo_labels (Sequence[int]): Pseudo-label of every target
                sample (length of the target set).
        """
        source_indices = np.asarray(source_indices, dtype=np.int64)
        target_indices = np.asarray(target_indices, dtype=np.int64)
        pseudo_labels = np.asarray(pseudo_labels, dtype=np.int64)
        if source_indices.shape != target_indices.shape or not len(
            source_indices
        ):
            raise ValueError(
                'source_indices and target_indices must be non-empty and of '
                f'equal length, got {len(source_indices)} and '
                f'{len(target_indices)}.'
            )
        if len(pseudo_labels) != len(self.target):
            raise ValueError(
                f'pseudo_labels must have one entry per target sample '
                f'({len(self.target)}), got {len(pseudo_labels)}.'
            )
        for name, idx, size in (
            ('source_indices', source_indices, len(self.source)),
            ('target_indices', target_indices, len(self.target)),
        ):
            if idx.min() < 0 or idx.max() >= size:
                raise ValueError(f'{name} must lie in [0, {size}).')
        self.source_indices = source_indices
        self.target_indices = target_indices
        self.pseudo_labels = pseudo_labels
        self.set_epoch(self.epoch)

    def set_epoch(self, epoch: int) -> None:
        """Draw the pair order of ``epoch``."""
        self.epoch = epoch
        if not self.num_pairs:
            return
        rng = np.random.default_rng(self.seed + epoch)
        repeats = -(-len(self) // self.num_pairs)
        self._order = np.concatenate(
            [rng.permutation(self.num_pairs) for _ in range(repeats)]
        )[: len(self)]

    def __getitem__(self, idx: int) -> dict:
        if not self.num_pairs:
            raise RuntimeError(
                'UDAPairDataset has no pairs yet: PseudoLabelHook sets them '
                'before training (add it to custom_hooks).'
            )
        pair = self._order[idx]
        target_idx = int(self.target_indices[pair])
        target = apply_pipeline(
            self.target.pipeline,
            _without_labels(self.target.get_data_info(target_idx)),
        )
        label = torch.tensor([int(self.pseudo_labels[target_idx])])
        target['data_samples'].set_field(label, 'pseudo_label')
        return dict(
            source=self.source[int(self.source_indices[pair])], target=target
        )
