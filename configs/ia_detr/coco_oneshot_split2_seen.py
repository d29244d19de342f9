# IA-DETR on one-shot COCO, split 2, evaluated on the split's 60 seen
# classes (val2017 pairs) instead of its 20 unseen ones; training as
# coco_oneshot_split2.py, so a checkpoint of either tests with both.
_base_ = './coco_oneshot_split1.py'

load_from = (
    'work_dirs/ia_detr_swinv2-s_30e_coco_oneshot_split2_stage1/epoch_30.pth'
)
split = 'coco2'
train_dataloader = dict(dataset=dict(split=split))
val_dataloader = dict(dataset=dict(split=split, test_classes='seen'))
test_dataloader = val_dataloader
