from .domainbed import LeaveOneDomainOut
from .samplers import DomainBalancedBatchSampler
from .subsets import DomainSplit, IndexSubset, StratifiedSubset, domainbed_seed
from .transforms import HueWrapColorJitter
from .uda_pairs import UDAPairDataset

__all__ = [
    'DomainBalancedBatchSampler',
    'DomainSplit',
    'HueWrapColorJitter',
    'LeaveOneDomainOut',
    'IndexSubset',
    'StratifiedSubset',
    'UDAPairDataset',
    'domainbed_seed',
]
