from .uda_hooks import NoiseScheduleHook, PseudoLabelHook

__all__ = ['NoiseScheduleHook', 'PseudoLabelHook']
