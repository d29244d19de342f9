from .one_shot_visualizer import OneShotDetLocalVisualizer

__all__ = ['OneShotDetLocalVisualizer']
