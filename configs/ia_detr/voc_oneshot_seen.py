# IA-DETR on one-shot PASCAL VOC, evaluated on the 16 seen classes
# (VOC2007 test pairs) instead of the 4 unseen ones; training as
# voc_oneshot.py, so a checkpoint of either tests with both.
_base_ = './voc_oneshot.py'

val_dataloader = dict(dataset=dict(test_classes='seen'))
test_dataloader = val_dataloader
