"""Run-safety hooks every xattn_mm config turns on (``default_hooks``
``finite_loss`` and ``random_state`` in ``configs/_base_/runtime``; turn one
off with ``enable=False``, e.g. ``--cfg-options
default_hooks.finite_loss.enable=False``: mmengine accepts ``None`` only for
its own default hooks). Registered in mmengine's root ``HOOKS`` registry,
so every host's scope finds them.

- :class:`FiniteLossHook` stops a run at the first iteration whose loss is
  NaN or infinite, and refuses to write a checkpoint of non-finite weights.
- :class:`RandomStateHook` stores every rank's random states in each
  checkpoint and restores them on resume, so that a resumed run draws what
  the uninterrupted run would have drawn (dropout, StochCA, augmentation).
"""

import math
import random
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as torch_dist
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import BaseLoop

RANDOM_STATE_KEY = 'random_state'
"""The checkpoint key :class:`RandomStateHook` writes."""


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Stop training when a loss term or a weight goes NaN or infinite.

    After every training iteration the hook reads the logged loss terms
    (the ``outputs`` of ``train_step``) and the largest magnitude of every
    trainable parameter, and raises :class:`FloatingPointError` naming the
    iteration and what went non-finite. A step can make the weights
    non-finite while its loss was still finite (lr 1e10 does, at the first
    step); the next forward would then fail somewhere unrelated, or train
    on silently. The hook runs before the logger and the checkpoint hook,
    so no checkpoint is written after the step; before any checkpoint is
    saved it checks the state dict once more and refuses non-finite
    weights.

    Cost: one fused max-magnitude pass over the parameters
    (``torch._foreach_norm``) and one host-device synchronisation per
    iteration (the logger already takes one per loss term), plus, in a
    distributed run, one all-reduce of a flag, so that every rank stops at
    the same iteration instead of the others waiting for the failed one.

    Args:
        check_weights (bool): Check the weights after every step and
            before each checkpoint. Defaults to True.
        enable (bool): False turns the hook off. Defaults to True.
    """

    priority = 'ABOVE_NORMAL'  # after RuntimeInfoHook, before the logger

    def __init__(
        self, check_weights: bool = True, enable: bool = True
    ) -> None:
        self.check_weights = check_weights and enable
        self.enable = enable

    def after_train_iter(
        self,
        runner,
        batch_idx: int,
        data_batch: Optional[Sequence] = None,
        outputs: Optional[Dict[str, Any]] = None,
    ) -> None:
        if not self.enable:
            return
        values = {
            key: torch.as_tensor(value).detach().float().reshape(-1)
            for key, value in (outputs or {}).items()
            if isinstance(value, (torch.Tensor, float, int))
        }
        names, params = [], []
        if self.check_weights:
            model = (
                runner.model.module
                if is_model_wrapper(runner.model)
                else runner.model
            )
            for name, param in model.named_parameters():
                if param.requires_grad:
                    names.append(name)
                    params.append(param.detach())
        if not values and not params:
            return
        flat = (
            [v.to(params[0].device) for v in values.values()]
            if params
            else list(values.values())
        )
        if params:
            flat.append(
                torch.stack(torch._foreach_norm(params, float('inf'))).float()
            )
        stacked = torch.cat(flat)
        flag = (~torch.isfinite(stacked)).any().to(torch.int32).reshape(1)
        _, world_size = get_dist_info()
        if world_size > 1:
            torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
        if not bool(flag.item()):
            return
        parts = []
        bad = {
            key: value.tolist()
            for key, value in values.items()
            if not bool(torch.isfinite(value).all())
        }
        if bad:
            terms = ', '.join(
                f'{key}={value[0] if len(value) == 1 else value}'
                for key, value in bad.items()
            )
            parts.append(f'non-finite loss terms: {terms}')
        if params:
            norms = stacked[-len(params) :]
            weights = [
                n
                for n, v in zip(names, norms.tolist())
                if not math.isfinite(v)
            ]
            if weights:
                shown = ', '.join(weights[:5]) + (
                    ' ...' if len(weights) > 5 else ''
                )
                parts.append(
                    f'non-finite weights after the step in {len(weights)} '
                    f'parameters ({shown})'
                )
        if not parts:
            parts.append('a loss or weight went non-finite on another rank')
        raise FloatingPointError(
            f'Iteration {runner.iter + 1} (epoch {runner.epoch + 1}): '
            + '; '.join(parts)
            + '. Training stopped before any checkpoint of this step was '
            'written. Lower the learning rate or clip gradients '
            '(optim_wrapper.clip_grad); '
            'default_hooks.finite_loss.enable=False turns this check off.'
        )

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if not self.check_weights:
            return
        state = checkpoint.get('state_dict', {})
        bad = [
            key
            for key, value in state.items()
            if torch.is_tensor(value)
            and value.is_floating_point()
            and not bool(torch.isfinite(value).all())
        ]
        if bad:
            shown = ', '.join(bad[:5]) + (' ...' if len(bad) > 5 else '')
            raise FloatingPointError(
                f'Iteration {runner.iter} (epoch {runner.epoch}): refused to '
                f'save a checkpoint with non-finite weights in {len(bad)} '
                f'tensors ({shown}); the checkpoints already written are '
                'kept. default_hooks.finite_loss.enable=False turns this '
                'check off.'
            )


def get_random_state(model: Optional[torch.nn.Module] = None) -> dict:
    """This process's random states: python, numpy, torch CPU, CUDA (per
    device) and those of ``model``'s modules that keep their own (a
    ``random_state()`` method, e.g. :class:`~xattn_mm.cls.StochCA`).

    Args:
        model (nn.Module, optional): The model. Defaults to None.

    Returns:
        dict: Picklable under the checkpoint policy's allow-list.
    """
    state = dict(
        python=random.getstate(),
        numpy=np.random.get_state(),
        torch=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state_all()
        if torch.cuda.is_available()
        else [],
        modules={},
    )
    if model is not None:
        for name, module in _modules_with_state(model):
            state['modules'][name] = module.random_state()
    return state


def set_random_state(
    state: dict, model: Optional[torch.nn.Module] = None
) -> None:
    """Restore what :func:`get_random_state` returned.

    Args:
        state (dict): A :func:`get_random_state` result.
        model (nn.Module, optional): The model whose modules' states to
            restore. Defaults to None.

    Raises:
        ValueError: If the state names a module ``model`` lacks.
    """
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    if model is not None:
        modules = dict(_modules_with_state(model))
        for name, module_state in state['modules'].items():
            if name not in modules:
                raise ValueError(
                    f'random_state of module {name!r} in the checkpoint, but '
                    'the model has no such module with a random state.'
                )
            modules[name].set_random_state(module_state)


def _modules_with_state(model: torch.nn.Module):
    if is_model_wrapper(model):
        model = model.module
    for name, module in model.named_modules():
        if callable(getattr(module, 'random_state', None)) and callable(
            getattr(module, 'set_random_state', None)
        ):
            yield name, module


class _RestoreBeforeFetch:
    """Iterator proxy: restores the random states right before the
    ``skip + 1``-th batch is fetched, i.e. after the iteration-based loop's
    fast-forward over the batches already trained, then steps aside."""

    def __init__(self, loop, skip: int, restore) -> None:
        self._loop = loop
        self._inner = loop.dataloader_iterator
        self._skip = skip
        self._restore = restore

    def __iter__(self):
        return self

    def __next__(self):
        if self._skip == 0:
            self._restore()
            self._loop.dataloader_iterator = self._inner
            return next(self._inner)
        self._skip -= 1
        return next(self._inner)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save every rank's random states into checkpoints; restore them on
    resume.

    mmengine saves no random state, so a run with dropout or stochastic
    layers draws differently after ``--resume`` than it would have without
    the interruption. This hook captures, right before each checkpoint, the
    states of :func:`get_random_state` on every rank (gathered to rank 0,
    which writes the file) under ``checkpoint['random_state']``, and
    restores this rank's on resume at the point where the uninterrupted run
    continued: before the next epoch's first batch (epoch-based loops) or
    before the first batch not yet trained (iteration-based loops, after
    their fast-forward over the trained ones). Validation does not consume
    the training stream: the states are saved before each validation and
    restored after it, so a resumed run (which skips the validation at the
    checkpoint) matches.

    Resuming with another number of ranks than the checkpoint was written
    by is allowed: the states are then not restored, with a warning.

    Args:
        enable (bool): False turns the hook off (mmengine's resume, which
            restores no random state). Defaults to True.
    """

    priority = 'VERY_HIGH'

    def __init__(self, enable: bool = True) -> None:
        self.enable = enable
        self._pending: Optional[dict] = None
        self._val_state: Optional[dict] = None

    # --- saving -------------------------------------------------------
    def after_train_iter(
        self, runner, batch_idx, data_batch=None, outputs=None
    ):
        if self._checkpoint_due(runner, by_epoch=False):
            self._capture(runner)

    def after_train_epoch(self, runner) -> None:
        if self._checkpoint_due(runner, by_epoch=True):
            self._capture(runner)

    def _checkpoint_due(self, runner, by_epoch: bool) -> bool:
        if not self.enable:
            return False
        for hook in runner.hooks:
            if (
                not isinstance(hook, CheckpointHook)
                or hook.by_epoch != by_epoch
            ):
                continue
            if by_epoch:
                return hook.every_n_epochs(
                    runner, hook.interval, hook.save_begin
                ) or (hook.save_last and hook.is_last_train_epoch(runner))
            return hook.every_n_train_iters(
                runner, hook.interval, hook.save_begin
            ) or (hook.save_last and hook.is_last_train_iter(runner))
        return False

    def _capture(self, runner) -> None:
        state = get_random_state(runner.model)
        _, world_size = get_dist_info()
        self._captured: List[dict] = (
            all_gather_object(state) if world_size > 1 else [state]
        )

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if not self.enable:
            return
        captured = getattr(self, '_captured', None)
        if captured is None:  # a save this hook did not foresee
            captured = [get_random_state(runner.model)]
            _, world_size = get_dist_info()
            if world_size > 1:
                print_log(
                    'RandomStateHook: an unforeseen checkpoint holds rank '
                    "0's random state only; resume will not restore them.",
                    logger='current',
                )
        checkpoint[RANDOM_STATE_KEY] = captured
        self._captured = None

    # --- restoring ----------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Runner.load_checkpoint calls this for load_from too: only a resume
        # (the runner's resume flag) continues the run's random streams.
        states = checkpoint.get(RANDOM_STATE_KEY)
        if not (self.enable and states and getattr(runner, '_resume', False)):
            return
        rank, world_size = get_dist_info()
        if len(states) != world_size:
            print_log(
                f'RandomStateHook: the checkpoint holds random states of '
                f'{len(states)} ranks, this run has {world_size}: they are '
                'not restored, and the resumed run draws differently.',
                logger='current',
            )
            return
        self._pending = states[rank]

    def before_train_epoch(self, runner) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        loop = runner.train_loop

        def restore() -> None:
            set_random_state(state, runner.model)

        if hasattr(loop, 'dataloader_iterator'):  # iteration-based
            loop.dataloader_iterator = _RestoreBeforeFetch(
                loop, runner.iter, restore
            )
        else:
            restore()

    def before_val(self, runner) -> None:
        if self.enable and isinstance(
            runner._train_loop, BaseLoop
        ):  # validating in training
            self._val_state = get_random_state(runner.model)

    def after_val(self, runner) -> None:
        if self._val_state is not None:
            set_random_state(self._val_state, runner.model)
            self._val_state = None
