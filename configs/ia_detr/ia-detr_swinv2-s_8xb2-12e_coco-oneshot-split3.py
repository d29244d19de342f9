# IA-DETR on one-shot COCO, split 3 (unseen: the categories whose index
# 1..80 is 3 mod 4): the split-1 config with the split and its stage-1
# checkpoint changed. Also reachable as coco_oneshot_split3.py.
_base_ = './ia-detr_swinv2-s_8xb2-12e_coco-oneshot-split1.py'

load_from = (
    'work_dirs/ia-detr_swinv2-s_8xb3-30e-stage1_coco-oneshot-split3/'
    'epoch_30.pth'
)
train_dataloader = val_dataloader = test_dataloader = dict(
    dataset=dict(split='coco3')
)
