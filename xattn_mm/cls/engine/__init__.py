from .hooks import NoiseScheduleHook, PseudoLabelHook
from .pseudo_labels import (
    center_aware_labels,
    mutual_nearest_neighbours,
    pair_domains,
)

__all__ = [
    'NoiseScheduleHook',
    'PseudoLabelHook',
    'center_aware_labels',
    'mutual_nearest_neighbours',
    'pair_domains',
]
