# Ablation of IA-DETR (paper: "double cross-attention"): 6 cross-attention
# layers first align the target's tokens to the exemplar, then a standard
# BoxRPB cross-attention decoder reads the aligned target
# (DoubleCrossAttentionDecoder); everything else as
# ia-detr_swinv2-s_8xb2-12e_voc-oneshot.py. Starts
# from the pretrained backbone: for the two-stage recipe, train
# ia_detr_swinv2-s_30e_voc_oneshot_stage1.py with
# --cfg-options model.decoder.type=DoubleCrossAttentionDecoder and set
# load_from to its checkpoint.
_base_ = './ia-detr_swinv2-s_8xb2-12e_voc-oneshot.py'

load_from = None
model = dict(
    decoder=dict(type='DoubleCrossAttentionDecoder', num_align_layers=6)
)
