# Source training for TMT (configs/tmt/source_*): the fine-tuning protocol
# (./finetune_vit-base-p16-upernet.py), plain supervised on the source domain,
# 80k iterations from ImageNet weights (the same warm-up, then the poly decay
# to the new end). A leaf's last checkpoint is the load_from of the
# vanilla_* / tmt_* leaves that adapt from its domain.
_base_ = './finetune_vit-base-p16-upernet.py'

max_iters = 80000
train_cfg = dict(max_iters=max_iters)
param_scheduler = [
    _base_.param_scheduler[0],
    dict(_base_.param_scheduler[1], end=max_iters),
]
