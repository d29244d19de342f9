"""Attention math shared by every method; imports torch and mmengine only."""

from .attention import MultiheadAttention, multihead_attention

__all__ = ['MultiheadAttention', 'multihead_attention']
