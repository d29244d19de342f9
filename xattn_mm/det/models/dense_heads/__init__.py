from .ia_detr_head import IADETRHead

__all__ = ['IADETRHead']
