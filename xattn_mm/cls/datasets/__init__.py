from .domainbed import LeaveOneDomainOut
from .samplers import DomainBalancedBatchSampler
from .subsets import DomainSplit, IndexSubset, StratifiedSubset, domainbed_seed

__all__ = [
    'DomainBalancedBatchSampler',
    'DomainSplit',
    'LeaveOneDomainOut',
    'IndexSubset',
    'StratifiedSubset',
    'domainbed_seed',
]
