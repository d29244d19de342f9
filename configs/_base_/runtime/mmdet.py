# mmdet's runtime for one-shot detection: a checkpoint every epoch (the last
# three kept), the visualizer that draws the exemplar beside the target's
# detections, and xattn_mm's run-safety hooks (docs/reliability.md): stop at
# the first non-finite loss, and keep every rank's random states in
# checkpoints for an exact resume. Turn either off with enable=False, e.g.
# --cfg-options default_hooks.finite_loss.enable=False.
_base_ = 'mmdet::_base_/default_runtime.py'
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3),
    finite_loss=dict(type='FiniteLossHook'),
    random_state=dict(type='RandomStateHook'),
)
visualizer = dict(
    type='OneShotDetLocalVisualizer',
    vis_backends=[dict(type='LocalVisBackend')],
    name='visualizer',
)
