"""Attention math shared by every method; imports torch and mmengine only."""

from .attention import MultiheadAttention, compute_dtype, multihead_attention
from .box_rpb import BoxRelativePositionBias, expand_axial_bias
from .frozen import HiddenFrozenMixin
from .indirect_attention import IndirectAttention

__all__ = [
    'BoxRelativePositionBias',
    'HiddenFrozenMixin',
    'IndirectAttention',
    'MultiheadAttention',
    'compute_dtype',
    'expand_axial_bias',
    'multihead_attention',
]
