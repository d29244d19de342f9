from .sequential_neck import SequentialNeck
from .upsample_neck import TransposedConvUpsample

__all__ = ['SequentialNeck', 'TransposedConvUpsample']
