"""Training-loop components for mmdet: hooks and optimizer-wrapper
constructors, registered into ``mmdet.registry``."""

from .hooks import FreezeBackboneHook
from .optimizers import LayerDecayOptimWrapperConstructor

__all__ = ['FreezeBackboneHook', 'LayerDecayOptimWrapperConstructor']
