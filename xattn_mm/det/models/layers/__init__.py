from .ia_detr_decoder import (
    DoubleCrossAttentionDecoder,
    IADETRDecoder,
    IADETRDecoderLayer,
    MisalignedAttentionDecoder,
)

__all__ = [
    'DoubleCrossAttentionDecoder',
    'IADETRDecoder',
    'IADETRDecoderLayer',
    'MisalignedAttentionDecoder',
]
