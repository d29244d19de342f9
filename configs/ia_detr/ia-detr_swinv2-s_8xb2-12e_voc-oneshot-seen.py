# IA-DETR on one-shot PASCAL VOC, evaluated on the 16 seen classes
# (VOC2007 test pairs) instead of the 4 unseen ones; training as
# ia-detr_swinv2-s_8xb2-12e_voc-oneshot.py, so a checkpoint of either tests
# with both.
_base_ = './ia-detr_swinv2-s_8xb2-12e_voc-oneshot.py'

val_dataloader = test_dataloader = dict(dataset=dict(test_classes='seen'))
