# IA-DETR on one-shot COCO, split 4 (unseen: the categories whose index
# 1..80 is 0 mod 4): coco_oneshot_split1.py with the split changed.
_base_ = './coco_oneshot_split1.py'

load_from = (
    'work_dirs/ia_detr_swinv2-s_30e_coco_oneshot_split4_stage1/epoch_30.pth'
)
split = 'coco4'
train_dataloader = dict(dataset=dict(split=split))
val_dataloader = dict(dataset=dict(split=split))
test_dataloader = val_dataloader
