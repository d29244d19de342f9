from .uda_preprocessor import UDADataPreprocessor

__all__ = ['UDADataPreprocessor']
