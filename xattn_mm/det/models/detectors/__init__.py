from .ia_detr import IADETR

__all__ = ['IADETR']
