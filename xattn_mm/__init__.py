"""xattn_mm: cross-attention components for mmdet, mmpretrain and mmseg.

Importing this package imports no host library; ``xattn_mm.det``,
``xattn_mm.cls`` and ``xattn_mm.seg`` each import one host and register into
its registries.
"""

__version__ = '0.1.0'
