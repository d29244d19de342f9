# mmpretrain's runtime for the fine-tuning protocols: iteration-based
# checkpoints and logs, seed 0, and xattn_mm's run-safety hooks
# (finite_loss, random_state; see ./mmdet.py).
_base_ = 'mmpretrain::_base_/default_runtime.py'
custom_imports = dict(imports=['xattn_mm.cls'], allow_failed_imports=False)
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(by_epoch=False, interval=1000),
    finite_loss=dict(type='FiniteLossHook'),
    random_state=dict(type='RandomStateHook'),
)
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
