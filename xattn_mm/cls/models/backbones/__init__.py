from .global_swin_v2 import GlobalSwinTransformerV2

__all__ = ['GlobalSwinTransformerV2']
