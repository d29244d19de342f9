from .one_shot_preprocessor import OneShotDetDataPreprocessor

__all__ = ['OneShotDetDataPreprocessor']
