# IA-DETR on one-shot COCO, split 1, evaluated on the split's 60 seen
# classes (val2017 pairs) instead of its 20 unseen ones; training as
# coco_oneshot_split1.py, so a checkpoint of either tests with both.
_base_ = './coco_oneshot_split1.py'

val_dataloader = dict(dataset=dict(test_classes='seen'))
test_dataloader = val_dataloader
