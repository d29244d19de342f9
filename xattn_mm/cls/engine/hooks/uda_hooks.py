"""Hooks of DACSM / CDTrans stage 2: pseudo-label refresh and the noise
schedule."""

import logging
from typing import Optional, Tuple

import numpy as np
import torch
from mmengine.dataset import default_collate
from mmengine.dist import (
    all_gather_object,
    broadcast_object_list,
    get_dist_info,
)
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from xattn_mm.cls.datasets import UDAPairDataset

from ..pseudo_labels import (
    center_aware_labels,
    mutual_nearest_neighbours,
    pair_domains,
)


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


@HOOKS.register_module()
class PseudoLabelHook(Hook):
    """Refresh the target pseudo-labels and the source-target pairs of a
    :class:`UDAPairDataset` (CDTrans recipe).

    Before training, and before every epoch whose 0-based index is a
    multiple of ``interval`` (CDTrans: epochs 1, 11, 21, 31 counted from
    1), the model in eval mode extracts the memory banks: L2-normalised
    features (the head's ``pre_logits``, i.e. the target branch) and
    softmax outputs of the whole source and target sets, through the
    dataset's ``extract_pipeline``. Then:

    1. target pseudo-labels by SHOT's centre-aware procedure
       (:func:`center_aware_labels`);
    2. nearest neighbours both ways by cosine
       (:func:`mutual_nearest_neighbours`);
    3. pairs (nearest source, t) and (s, nearest target), kept when the
       source label equals the pseudo-label (:func:`pair_domains`).

    Source labels come from the source dataset; the target set is read
    through a label-free view. In distributed runs every rank extracts a
    shard, rank 0 gathers the banks, computes the pseudo-labels and pairs
    alone and broadcasts them: every rank gets the same pairs, hence the
    same epoch length (ranks computing their own could break a tie
    differently, disagree on the pair count and hang in a collective).

    The dataset's pair order is redrawn before every epoch. Workers must
    see the refreshed dataset, so the train dataloader must not use
    ``persistent_workers``.

    Args:
        interval (int): Epochs between refreshes. Defaults to 10.
        batch_size (int): Extraction batch size. Defaults to 64.
        num_workers (int): Extraction workers. Defaults to 2.
        chunk_size (int): Source rows per similarity block.
            Defaults to 4096.
        refine_steps (int): Hard-centroid rounds of the pseudo-labels.
            Defaults to 1.
        label_filter (bool): Keep only label-consistent pairs.
            Defaults to True.
        deduplicate (bool): Drop the second copy of pairs found both ways.
            Defaults to False (CDTrans).
    """

    priority = 'NORMAL'

    def __init__(
        self,
        interval: int = 10,
        batch_size: int = 64,
        num_workers: int = 2,
        chunk_size: int = 4096,
        refine_steps: int = 1,
        label_filter: bool = True,
        deduplicate: bool = False,
    ) -> None:
        for name, value in (
            ('interval', interval),
            ('batch_size', batch_size),
            ('chunk_size', chunk_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f'{name} must be an int, got {value!r}.')
            if value <= 0:
                raise ValueError(f'{name} must be positive, got {value}.')
        self.interval = interval
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.chunk_size = chunk_size
        self.refine_steps = refine_steps
        self.label_filter = label_filter
        self.deduplicate = deduplicate
        self._refreshed_epoch: Optional[int] = None

    @staticmethod
    def _dataset(runner) -> UDAPairDataset:
        loader = runner.train_dataloader
        dataset = loader.dataset
        if not isinstance(dataset, UDAPairDataset):
            raise TypeError(
                'PseudoLabelHook needs train_dataloader.dataset to be a '
                f'UDAPairDataset, got {type(dataset).__name__}.'
            )
        if loader.num_workers > 0 and loader.persistent_workers:
            raise ValueError(
                'train_dataloader.persistent_workers must be False with '
                'PseudoLabelHook: persistent workers keep the dataset copy '
                'of the first epoch and never see refreshed pairs.'
            )
        return dataset

    @torch.no_grad()
    def _extract(self, model, view) -> Optional[Tuple[Tensor, Tensor]]:
        """Features and softmax outputs of every sample of ``view``, in
        order, gathered on rank 0 (None on the other ranks)."""
        rank, world_size = get_dist_info()
        indices = list(range(rank, len(view), world_size))
        loader = DataLoader(
            Subset(view, indices),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=default_collate,
        )
        feats, probs = [], []
        for batch in loader:
            inputs = model.data_preprocessor(batch, False)['inputs']
            out = model.extract_feat(inputs)
            feats.append(model.head.pre_logits(out).float().cpu())
            probs.append(model.head(out).float().softmax(dim=1).cpu())
        part = (indices, torch.cat(feats), torch.cat(probs))
        # all_gather (NCCL has no gather of objects in mmengine's helpers).
        parts = all_gather_object(part) if world_size > 1 else [part]
        if rank != 0:
            return None
        order = torch.tensor(sum((p[0] for p in parts), []))
        feats = torch.cat([p[1] for p in parts])
        probs = torch.cat([p[2] for p in parts])
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order))
        return feats[inverse], probs[inverse]

    def refresh(self, runner) -> None:
        """Recompute the pseudo-labels and pairs now (on rank 0) and give
        them to every rank."""
        dataset = self._dataset(runner)
        model = _unwrap(runner.model)
        was_training = model.training
        model.eval()
        source = self._extract(model, dataset.extraction_set('source'))
        target = self._extract(model, dataset.extraction_set('target'))
        model.train(was_training)
        result = [None]
        if get_dist_info()[0] == 0:
            result[0] = self._pairs(
                dataset, source[0], *target, next(model.parameters()).device
            )
        broadcast_object_list(result)  # no-op outside DDP
        source_idx, target_idx, pseudo, num_classes = result[0]
        if not len(source_idx):
            raise RuntimeError(
                'No source-target pair has a source label equal to the '
                'target pseudo-label; check that both datasets share the '
                'class order.'
            )
        dataset.set_pairs(source_idx, target_idx, pseudo)
        self._refreshed_epoch = runner.epoch
        counts = np.bincount(pseudo, minlength=num_classes)
        print_log(
            f'PseudoLabelHook (epoch {runner.epoch}): {len(source_idx)} '
            f'pairs from {len(dataset.source)} source and {len(pseudo)} '
            f'target samples; pseudo-labels per class {counts.tolist()}.',
            logger='current',
            level=logging.INFO,
        )

    def _pairs(
        self,
        dataset: UDAPairDataset,
        source_feats: Tensor,
        target_feats: Tensor,
        target_probs: Tensor,
        device: torch.device,
    ) -> tuple:
        """Pseudo-labels and pairs from the memory banks, as numpy arrays:
        (source indices, target indices, target pseudo-labels, classes)."""
        source_feats = source_feats.to(device)
        target_feats = target_feats.to(device)
        pseudo = center_aware_labels(
            target_feats, target_probs.to(device), self.refine_steps
        )
        target_of_source, source_of_target = mutual_nearest_neighbours(
            source_feats, target_feats, self.chunk_size
        )
        source_labels = torch.as_tensor(
            np.asarray(dataset.source.get_gt_labels()), device=device
        )
        source_idx, target_idx = pair_domains(
            source_labels,
            pseudo,
            target_of_source,
            source_of_target,
            self.label_filter,
            self.deduplicate,
        )
        return (
            source_idx.cpu().numpy(),
            target_idx.cpu().numpy(),
            pseudo.cpu().numpy(),
            target_probs.shape[1],
        )

    def before_train(self, runner) -> None:
        """Pairs for the first epoch trained (also after a resume)."""
        self.refresh(runner)

    def before_train_epoch(self, runner) -> None:
        """Refresh every ``interval`` epochs; redraw the pair order."""
        if (
            runner.epoch % self.interval == 0
            and runner.epoch != self._refreshed_epoch
        ):
            self.refresh(runner)
        self._dataset(runner).set_epoch(runner.epoch)


@HOOKS.register_module()
class NoiseScheduleHook(Hook):
    """Tell the backbone how far training has gone, for the decaying noise
    schedule of :class:`DAT` (``noise_schedule='linear'``): before every
    training iteration, ``progress = iter / max_iters``."""

    def before_train_iter(
        self, runner, batch_idx: int, data_batch: Optional[dict] = None
    ) -> None:
        """Set the backbone's progress."""
        backbone = _unwrap(runner.model).backbone
        if not hasattr(backbone, 'set_progress'):
            raise TypeError(
                'NoiseScheduleHook needs a backbone with set_progress (DAT), '
                f'got {type(backbone).__name__}.'
            )
        backbone.set_progress(min(runner.iter / max(runner.max_iters, 1), 1))
