"""Freeze a detector's backbone from a given training epoch on (IA-DETR's
stage-2 schedule)."""

from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch.nn.parallel import DistributedDataParallel


@HOOKS.register_module()
class FreezeBackboneHook(Hook):
    """Stop training ``model.backbone`` from epoch ``start_epoch`` on.

    Before every training epoch whose index is at least ``start_epoch``, the
    backbone's parameters get ``requires_grad=False``. Epochs are counted as
    mmengine's ``runner.epoch``: 0-based, the number of epochs already
    trained (the log's "Epoch(train) [3]" is ``runner.epoch == 2``). The
    check runs at the start of every epoch, so a run resumed after
    ``start_epoch`` freezes the backbone before its first step.

    Only the parameters are frozen, as the official IA-DETR code does
    (``requires_grad = False`` on ``backbone.0.net``): the modules keep the
    model's train/eval mode, so a frozen Swin still applies drop path in
    training. BatchNorm statistics are buffers and would keep updating in
    train mode; backbones with BatchNorm should be built with
    ``norm_eval=True`` (the IA-DETR ResNet configs are, matching the
    official ``FrozenBatchNorm2d``).

    In a distributed run the hook then wraps the model in a new DDP wrapper
    of the same type and settings: DDP reduces only the parameters that
    require gradients when it is built, so the frozen backbone leaves the
    all-reduce (no gradient traffic for it, measured in
    ``tests/test_det/test_freeze_backbone_hook.py``) and the run needs no
    ``find_unused_parameters``. Other model wrappers (FSDP, DeepSpeed) are
    left as they are, with a warning.

    Args:
        start_epoch (int): First epoch (0-based) trained with a frozen
            backbone. Defaults to 2: two epochs with the backbone trained,
            then frozen.
    """

    def __init__(self, start_epoch: int = 2) -> None:
        if (
            not isinstance(start_epoch, int)
            or isinstance(start_epoch, bool)
            or start_epoch < 0
        ):
            raise ValueError(
                f'start_epoch must be a non-negative int, got {start_epoch!r}.'
            )
        self.start_epoch = start_epoch

    def before_train_epoch(self, runner) -> None:
        """Freeze the backbone if this epoch is ``start_epoch`` or later.

        Args:
            runner (Runner): The runner; ``runner.model`` may be wrapped
                (DDP), the backbone is then ``runner.model.module.backbone``.
        """
        if runner.epoch < self.start_epoch:
            return
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        backbone = getattr(model, 'backbone', None)
        if backbone is None:
            raise AttributeError(
                f'FreezeBackboneHook needs a model with a backbone, got '
                f'{type(model).__name__}.'
            )
        trainable = [p for p in backbone.parameters() if p.requires_grad]
        for param in trainable:
            param.requires_grad_(False)
        if trainable:
            runner.logger.info(
                f'FreezeBackboneHook: froze {len(trainable)} backbone '
                f'parameter tensors before epoch {runner.epoch + 1}.'
            )
            if is_model_wrapper(runner.model):
                self._rewrap(runner)

    @staticmethod
    def _rewrap(runner) -> None:
        """Rebuild ``runner.model``'s DDP wrapper around the same module, so
        that its reducer holds only the parameters still trained."""
        wrapper = runner.model
        if not isinstance(wrapper, DistributedDataParallel):
            runner.logger.warning(
                f'FreezeBackboneHook: {type(wrapper).__name__} is not a DDP '
                'wrapper; it keeps synchronising the frozen backbone.'
            )
            return
        settings = dict(
            device_ids=wrapper.device_ids,
            output_device=wrapper.output_device,
            broadcast_buffers=wrapper.broadcast_buffers,
            find_unused_parameters=wrapper.find_unused_parameters,
            bucket_cap_mb=wrapper.bucket_bytes_cap / 2**20,
            gradient_as_bucket_view=wrapper.gradient_as_bucket_view,
            static_graph=wrapper.static_graph,
        )
        if hasattr(wrapper, 'detect_anomalous_params'):  # mmengine's
            settings['detect_anomalous_params'] = (
                wrapper.detect_anomalous_params
            )
        module, wrapper_type = wrapper.module, type(wrapper)
        # Dropping the old wrapper frees its reducer and gradient hooks.
        runner.model = None
        del wrapper
        runner.model = wrapper_type(module=module, **settings)
        runner.logger.info(
            'FreezeBackboneHook: rebuilt the DDP wrapper without the frozen '
            'parameters.'
        )
