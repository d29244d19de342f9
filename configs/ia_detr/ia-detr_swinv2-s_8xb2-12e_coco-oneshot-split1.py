# IA-DETR (arXiv 2509.26015) on one-shot COCO, split 1: the official
# recipe's stage 2 with the official Swin V2-S backbone, fine-tuned from the
# stage-1 ("upretrain") checkpoint of
# ia-detr_swinv2-s_8xb3-30e-stage1_coco-oneshot-split1.py. Train on
# train2017 pairs of the 60 seen classes, test on val2017 pairs of the 20
# unseen classes of the split (five exemplar draws, AP50); 8 GPUs x 2
# images, 12 epochs. Also reachable as coco_oneshot_split1.py.
# Commands, data and weights: configs/ia_detr/README.md.
_base_ = [
    '../_base_/models/ia_detr_swinv2-s.py',
    '../_base_/datasets/coco_oneshot.py',
    '../_base_/schedules/ia_detr_12e.py',
    '../_base_/runtime/mmdet.py',
]

# the stage-1 checkpoint to start from (None: from the pretrained backbone)
load_from = (
    'work_dirs/ia-detr_swinv2-s_8xb3-30e-stage1_coco-oneshot-split1/'
    'epoch_30.pth'
)
