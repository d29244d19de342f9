from .one_shot_coco_metric import OneShotCocoMetric

__all__ = ['OneShotCocoMetric']
