# mmseg's runtime plus xattn_mm's run-safety hooks (see ./mmdet.py).
_base_ = 'mmseg::_base_/default_runtime.py'
default_hooks = dict(
    finite_loss=dict(type='FiniteLossHook'),
    random_state=dict(type='RandomStateHook'),
)
