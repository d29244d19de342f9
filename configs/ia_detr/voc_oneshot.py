# The headline config under the name users type:
# ia-detr_swinv2-s_8xb2-12e_voc-oneshot.py.
_base_ = './ia-detr_swinv2-s_8xb2-12e_voc-oneshot.py'
