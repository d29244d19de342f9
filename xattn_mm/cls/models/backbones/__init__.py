from .dat import DAT
from .global_swin_v2 import GlobalSwinTransformerV2
from .stoch_ca import StochCA

__all__ = ['DAT', 'GlobalSwinTransformerV2', 'StochCA']
