from .class_accuracy import MeanClassAccuracy
from .domain_accuracy import DomainAccuracy

__all__ = ['DomainAccuracy', 'MeanClassAccuracy']
