# Ablation of IA-DETR (paper: "misaligned attention"): cross-attention with
# keys from the exemplar and values from the target, without BoxRPB
# (MisalignedAttentionDecoder); everything else as
# ia-detr_swinv2-s_8xb2-12e_voc-oneshot.py. Starts
# from the pretrained backbone: for the two-stage recipe, train
# ia_detr_swinv2-s_30e_voc_oneshot_stage1.py with
# --cfg-options model.decoder.type=MisalignedAttentionDecoder and set
# load_from to its checkpoint.
_base_ = './ia-detr_swinv2-s_8xb2-12e_voc-oneshot.py'

load_from = None
model = dict(decoder=dict(type='MisalignedAttentionDecoder'))
