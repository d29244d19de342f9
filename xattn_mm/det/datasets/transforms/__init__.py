from .one_shot import CropExemplar, PackOneShotInputs, RandomPatchExemplar

__all__ = ['CropExemplar', 'PackOneShotInputs', 'RandomPatchExemplar']
