# Vanilla fine-tuning ADE20K -> Cityscapes: the source model fine-tuned on the
# target training set for 20k iterations, mIoU on the target validation set.
# Its TMT twin is the tmt_* config of the same name.
_base_ = [
    '../_base_/protocols/finetune_vit-base-p16-upernet.py',
    'mmseg::_base_/datasets/cityscapes.py',
]
# The source label set differs (150 classes): the classifier layers
# of both heads are not loaded and start from scratch.
model = dict(
    decode_head=dict(num_classes=19),
    auxiliary_head=dict(num_classes=19),
)
load_from = (
    'work_dirs/source_vit-base-p16-upernet_8xb2-160k_ade20k-512x512/'
    'iter_160000.pth'
)
