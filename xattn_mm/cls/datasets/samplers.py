"""Batches with the same number of samples from every domain (DomainBed's
training batches)."""

import bisect
from typing import Iterator, List

from mmengine.dataset import ConcatDataset
from mmpretrain.registry import DATA_SAMPLERS
from torch.utils.data import BatchSampler, Sampler


@DATA_SAMPLERS.register_module()
class DomainBalancedBatchSampler(BatchSampler):
    """Group a sampler's indices over a :class:`ConcatDataset` of domains
    into batches of ``batch_size`` samples from each domain.

    Indices arrive in the wrapped sampler's order (shuffled, seeded and split
    across ranks by mmengine's ``InfiniteSampler`` or ``DefaultSampler``);
    each goes to its domain's bucket unless that bucket is already full (or
    holds it), in which case it is skipped for this batch. A batch is
    yielded when every bucket is full, so each domain contributes a uniform
    draw without replacement from its part of the stream. With
    ``batch_size`` = 32 and three training domains a batch holds 96
    samples, DomainBed's protocol on one GPU; the count is per GPU.

    Args:
        sampler (Sampler): The index sampler; its ``dataset`` must be a
            :class:`ConcatDataset` with one dataset per domain.
        batch_size (int): Samples per domain in a batch (per GPU).
        drop_last (bool): Unused (batches are always complete); accepted for
            mmengine's dataloader builder. Defaults to True.
    """

    def __init__(
        self, sampler: Sampler, batch_size: int, drop_last: bool = True
    ) -> None:
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(
                f'batch_size must be a positive int, got {batch_size!r}.'
            )
        dataset = getattr(sampler, 'dataset', None)
        if not isinstance(dataset, ConcatDataset):
            raise TypeError(
                'DomainBalancedBatchSampler needs a dataset of type '
                'ConcatDataset (one dataset per domain), got '
                f'{type(dataset).__name__}.'
            )
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = True
        self.cumulative_sizes = list(dataset.cumulative_sizes)
        sizes = [
            b - a
            for a, b in zip(
                [0] + self.cumulative_sizes[:-1], self.cumulative_sizes
            )
        ]
        if min(sizes) == 0:
            raise ValueError(
                f'Every domain needs samples; the domain sizes are {sizes}.'
            )
        self.domain_sizes = sizes

    def __iter__(self) -> Iterator[List[int]]:
        buckets: List[List[int]] = [[] for _ in self.domain_sizes]
        full = 0
        for index in self.sampler:
            bucket = buckets[bisect.bisect_right(self.cumulative_sizes, index)]
            # Across the sampler's passes an index may come back before
            # its bucket is full; a batch holds it once.
            if len(bucket) == self.batch_size or index in bucket:
                continue
            bucket.append(index)
            full += len(bucket) == self.batch_size
            if full == len(buckets):
                yield [i for b in buckets for i in b]
                buckets = [[] for _ in self.domain_sizes]
                full = 0

    def __len__(self) -> int:
        """Batches in one pass of a finite sampler over the whole set: the
        smallest domain runs out first (an upper bound per rank)."""
        return min(self.domain_sizes) // self.batch_size
