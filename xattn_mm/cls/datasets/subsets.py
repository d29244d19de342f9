"""Dataset wrappers that fix a subset of a host dataset's samples: the
DomainBed train / hold-out split of one domain, and the class-stratified
training-data ratios of transfer-learning benchmarks."""

import copy
import hashlib
from typing import List, Sequence, Union

import numpy as np
from mmengine.dataset import BaseDataset, force_full_init
from mmpretrain.registry import DATASETS

PARTS = ('all', 'train', 'holdout')


def domainbed_seed(*args) -> int:
    """DomainBed's ``seed_hash``: the MD5 of ``str(args)``, mod 2**31.

    Args:
        *args: The values hashed, e.g. (trial_seed, env_index).

    Returns:
        int: A seed in [0, 2**31).
    """
    digest = hashlib.md5(str(args).encode('utf-8')).hexdigest()
    return int(digest, 16) % (2**31)


class IndexSubset:
    """A fixed subset of a wrapped dataset, chosen by :meth:`select` and cut
    in place by mmengine's ``BaseDataset.get_subset_`` (the wrapper exists to
    be a registered config type that chooses the indices, lazily).

    Not mmengine's copying ``get_subset``: in mmengine 0.10.7 it deep-copies
    through ``_copy_without_annotation(memo=dict())``, a memo shared by every
    call of the process, so once an earlier dataset is freed and a new
    object takes its address, the copy returns that earlier dataset's copy
    in its place (seen: a subset whose ``pipeline`` was a ``CustomDataset``,
    "'CustomDataset' object is not callable", in a full test run).

    Args:
        dataset (BaseDataset or dict): The dataset or its config; a dataset
            passed in is copied first (with a fresh memo), never cut.
        lazy_init (bool): Defer loading the annotations. Defaults to False.
    """

    def __init__(
        self, dataset: Union[BaseDataset, dict], lazy_init: bool = False
    ) -> None:
        if isinstance(dataset, dict):
            dataset = DATASETS.build(dataset)
        else:
            dataset = copy.deepcopy(dataset)
        self.dataset = dataset
        self._metainfo = dataset.metainfo
        self.indices: List[int] = []
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    @property
    def metainfo(self) -> dict:
        """The wrapped dataset's meta information."""
        return copy.deepcopy(self._metainfo)

    def select(self) -> List[int]:
        """Indices of the wrapped dataset to keep, in order."""
        raise NotImplementedError

    def full_init(self) -> None:
        """Load the wrapped dataset and cut it to the subset."""
        if self._fully_initialized:
            return
        self.dataset.full_init()
        self.indices = list(self.select())
        self.dataset.get_subset_(self.indices)
        self._fully_initialized = True

    @force_full_init
    def get_data_info(self, idx: int) -> dict:
        """Annotation of the ``idx``-th kept sample."""
        return self.dataset.get_data_info(idx)

    @force_full_init
    def get_gt_labels(self) -> np.ndarray:
        """Labels of the kept samples."""
        return np.asarray(self.dataset.get_gt_labels())

    @force_full_init
    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> dict:
        if not self._fully_initialized:
            self.full_init()
        return self.dataset[idx]


@DATASETS.register_module()
class DomainSplit(IndexSubset):
    """One domain of a domain-generalisation benchmark, split as DomainBed
    splits it, with each sample tagged by its domain.

    DomainBed shuffles the indices ``0..n-1`` of a domain with
    ``np.random.RandomState(seed_hash(trial_seed, domain_index))`` and holds
    out the first ``int(n * holdout_fraction)`` for validation; the rest
    train. ``domain_index`` is the domain's position among the dataset's
    sorted domain folders. With the images listed in the same order as
    torchvision's ``ImageFolder`` (classes, then files, sorted; as
    mmpretrain's ``CustomDataset`` does) the split is DomainBed's.

    Each sample's data sample gets ``domain`` and ``domain_part`` meta
    fields, read by :class:`~xattn_mm.cls.evaluation.DomainAccuracy`.

    Args:
        dataset (BaseDataset or dict): The domain's dataset (e.g. a
            ``CustomDataset`` over ``<root>/<domain>``).
        domain (str): Domain name.
        domain_index (int): Index of the domain among the sorted domains.
        part (str): ``'train'``, ``'holdout'`` or ``'all'``.
            Defaults to ``'all'``.
        holdout_fraction (float): Fraction held out. Defaults to 0.2.
        trial_seed (int): DomainBed's trial seed. Defaults to 0.
        lazy_init (bool): Defer loading. Defaults to False.
    """

    def __init__(
        self,
        dataset: Union[BaseDataset, dict],
        domain: str,
        domain_index: int,
        part: str = 'all',
        holdout_fraction: float = 0.2,
        trial_seed: int = 0,
        lazy_init: bool = False,
    ) -> None:
        if part not in PARTS:
            raise ValueError(f'part must be one of {PARTS}, got {part!r}.')
        if not 0.0 <= holdout_fraction < 1.0:
            raise ValueError(
                f'holdout_fraction must be in [0, 1), got {holdout_fraction}.'
            )
        if not isinstance(domain, str) or not domain:
            raise ValueError(f'domain must be a name, got {domain!r}.')
        self.domain = domain
        self.domain_index = domain_index
        self.part = part
        self.holdout_fraction = holdout_fraction
        self.trial_seed = trial_seed
        super().__init__(dataset, lazy_init=lazy_init)

    def select(self) -> List[int]:
        keys = list(range(len(self.dataset)))
        if self.part == 'all':
            return keys
        seed = domainbed_seed(self.trial_seed, self.domain_index)
        np.random.RandomState(seed).shuffle(keys)
        num_holdout = int(len(keys) * self.holdout_fraction)
        if self.part == 'holdout':
            return keys[:num_holdout]
        return keys[num_holdout:]

    def __getitem__(self, idx: int) -> dict:
        data = super().__getitem__(idx)
        data['data_samples'].set_metainfo(
            {'domain': self.domain, 'domain_part': self.part}
        )
        return data


@DATASETS.register_module()
class StratifiedSubset(IndexSubset):
    """A class-stratified fraction of a dataset (the 15 / 30 / 50 % training
    sets of the transfer benchmarks): per class, ``max(1, floor(n_c *
    ratio))`` samples drawn without replacement by a generator seeded with
    ``seed``; the kept samples stay in the dataset's order.

    Args:
        dataset (BaseDataset or dict): A classification dataset.
        ratio (float): Fraction kept, in (0, 1].
        seed (int): Seed of the draw. Defaults to 0.
        lazy_init (bool): Defer loading. Defaults to False.
    """

    def __init__(
        self,
        dataset: Union[BaseDataset, dict],
        ratio: float,
        seed: int = 0,
        lazy_init: bool = False,
    ) -> None:
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f'ratio must be in (0, 1], got {ratio!r}.')
        self.ratio = ratio
        self.seed = seed
        super().__init__(dataset, lazy_init=lazy_init)

    def select(self) -> Sequence[int]:
        labels = np.asarray(self.dataset.get_gt_labels())
        rng = np.random.RandomState(self.seed)
        kept = []
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            count = max(1, int(len(members) * self.ratio))
            kept.append(rng.permutation(members)[:count])
        return np.sort(np.concatenate(kept)).tolist() if kept else []
