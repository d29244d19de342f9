# mmdet's runtime plus xattn_mm's run-safety hooks (docs/reliability.md):
# stop at the first non-finite loss, and keep every rank's random states in
# checkpoints for an exact resume. Turn either off with enable=False, e.g.
# --cfg-options default_hooks.finite_loss.enable=False.
_base_ = 'mmdet::_base_/default_runtime.py'
default_hooks = dict(
    finite_loss=dict(type='FiniteLossHook'),
    random_state=dict(type='RandomStateHook'),
)
