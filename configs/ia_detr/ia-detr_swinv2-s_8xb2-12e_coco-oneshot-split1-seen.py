# IA-DETR on one-shot COCO, split 1, evaluated on the split's 60 seen
# classes (val2017 pairs) instead of its 20 unseen ones; training as
# ia-detr_swinv2-s_8xb2-12e_coco-oneshot-split1.py, so a checkpoint of
# either tests with both.
_base_ = './ia-detr_swinv2-s_8xb2-12e_coco-oneshot-split1.py'

val_dataloader = test_dataloader = dict(dataset=dict(test_classes='seen'))
