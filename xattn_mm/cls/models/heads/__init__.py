from .csm_head import CSMHead

__all__ = ['CSMHead']
