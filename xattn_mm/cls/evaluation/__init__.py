from .domain_accuracy import DomainAccuracy

__all__ = ['DomainAccuracy']
