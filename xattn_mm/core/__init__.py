"""Attention math shared by every method; imports torch and mmengine only."""

from .attention import MultiheadAttention, multihead_attention
from .box_rpb import BoxRelativePositionBias, expand_axial_bias
from .indirect_attention import IndirectAttention

__all__ = [
    'BoxRelativePositionBias',
    'IndirectAttention',
    'MultiheadAttention',
    'expand_axial_bias',
    'multihead_attention',
]
