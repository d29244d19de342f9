"""DomainBed's leave-one-domain-out data (Gulrajani and Lopez-Paz, ICLR
2021), as StochCA's domain-generalisation protocol uses it."""

from typing import List, Optional, Sequence

from mmengine.dataset import ConcatDataset
from mmpretrain.registry import DATASETS

SPLITS = ('train', 'val', 'test')


@DATASETS.register_module()
class LeaveOneDomainOut(ConcatDataset):
    """Domains of a domain-generalisation benchmark with one held out for
    testing, concatenated (one sub-dataset per domain).

    Each domain is an mmpretrain ``CustomDataset`` over
    ``<data_root>/<domain>/<class>/<image>`` wrapped in
    :class:`~xattn_mm.cls.datasets.DomainSplit`:

    - ``split='train'``: the 80 % training part of every training domain;
    - ``split='val'``: the 20 % hold-outs of the training domains (the
      training-domain validation set that selects the model) followed by the
      whole test domain;
    - ``split='test'``: the whole test domain.

    Args:
        data_root (str): The benchmark's folder.
        domains (Sequence[str]): Every domain folder; DomainBed numbers them
            in sorted order, which seeds their splits.
        test_domain (str): The held-out domain, one of ``domains``.
        split (str): ``'train'``, ``'val'`` or ``'test'``.
        pipeline (list[dict]): Data pipeline.
        holdout_fraction (float): Fraction of each training domain held out.
            Defaults to 0.2.
        trial_seed (int): DomainBed's trial seed. Defaults to 0.
        classes (Sequence[str], optional): Class names, fixing the label
            order in every domain. Defaults to None (each domain's sorted
            class folders, which must then agree).
        lazy_init (bool): Defer loading. Defaults to False.
    """

    def __init__(
        self,
        data_root: str,
        domains: Sequence[str],
        test_domain: str,
        split: str,
        pipeline: Sequence[dict],
        holdout_fraction: float = 0.2,
        trial_seed: int = 0,
        classes: Optional[Sequence[str]] = None,
        lazy_init: bool = False,
    ) -> None:
        if isinstance(domains, str) or len(set(domains)) != len(domains):
            raise ValueError(
                f'domains must be a list of distinct names, got {domains!r}.'
            )
        if test_domain not in domains:
            raise ValueError(
                f'test_domain {test_domain!r} is not one of the domains '
                f'{list(domains)}.'
            )
        if split not in SPLITS:
            raise ValueError(f'split must be one of {SPLITS}, got {split!r}.')
        if len(domains) < 2:
            raise ValueError('Leave-one-domain-out needs at least 2 domains.')
        self.domains = list(domains)
        self.test_domain = test_domain
        self.split = split
        order = sorted(domains)

        def part(domain: str, which: str) -> dict:
            inner = dict(
                type='CustomDataset',
                data_root=data_root,
                data_prefix=domain,
                pipeline=list(pipeline),
            )
            if classes is not None:
                inner['metainfo'] = dict(classes=list(classes))
            return dict(
                type='DomainSplit',
                dataset=inner,
                domain=domain,
                domain_index=order.index(domain),
                part=which,
                holdout_fraction=holdout_fraction,
                trial_seed=trial_seed,
            )

        if split == 'train':
            datasets = [part(d, 'train') for d in self.train_domains]
        elif split == 'val':
            datasets = [part(d, 'holdout') for d in self.train_domains]
            datasets.append(part(test_domain, 'all'))
        else:
            datasets = [part(test_domain, 'all')]
        super().__init__(datasets, lazy_init=lazy_init)

    @property
    def train_domains(self) -> List[str]:
        """The domains trained on."""
        return [d for d in self.domains if d != self.test_domain]
