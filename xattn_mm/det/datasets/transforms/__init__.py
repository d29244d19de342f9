from .one_shot import PackOneShotInputs, RandomPatchExemplar

__all__ = ['PackOneShotInputs', 'RandomPatchExemplar']
