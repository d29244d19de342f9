from .domainbed import LeaveOneDomainOut
from .samplers import DomainBalancedBatchSampler
from .subsets import DomainSplit, IndexSubset, StratifiedSubset, domainbed_seed
from .uda_pairs import UDAPairDataset

__all__ = [
    'DomainBalancedBatchSampler',
    'DomainSplit',
    'LeaveOneDomainOut',
    'IndexSubset',
    'StratifiedSubset',
    'UDAPairDataset',
    'domainbed_seed',
]
