"""Frozen models a module runs but must not own (StochCA's teacher, TMT's
source model)."""

from typing import Dict, Optional

from torch import nn


class HiddenFrozenMixin:
    """Mixin for an ``nn.Module`` that runs frozen models it must not own.

    A model kept with :meth:`hide_frozen` is outside ``nn.Module``'s
    registration: not in ``state_dict()`` (checkpoints stay the plain
    model's), not in ``parameters()`` (so neither in the optimizer nor in
    DDP's gradient traffic), untouched by ``train()``; yet it follows the
    owner's ``.to()`` / ``.cuda()`` / ``.half()`` (``_apply``) and is copied
    with it (``copy.deepcopy``). List the mixin before the module class:
    ``class StochCA(HiddenFrozenMixin, BaseBackbone)``.
    """

    def _hidden_frozen(self) -> Dict[str, nn.Module]:
        return self.__dict__.setdefault('_hidden_frozen_models', {})

    def hide_frozen(self, name: str, model: nn.Module) -> nn.Module:
        """Freeze ``model`` (no gradients, eval mode), move it to this
        module's device and dtype and keep it under ``name``, replacing any
        model kept there.

        Args:
            name (str): Key, e.g. ``'teacher'``.
            model (nn.Module): The model.

        Returns:
            nn.Module: ``model``.
        """
        model.requires_grad_(False).eval()
        reference = next(self.parameters(), None)
        if reference is not None:
            model.to(device=reference.device, dtype=reference.dtype)
        self._hidden_frozen()[name] = model
        return model

    def hidden_frozen(self, name: str) -> Optional[nn.Module]:
        """The model kept under ``name``, or None."""
        return self._hidden_frozen().get(name)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for model in self._hidden_frozen().values():
            model._apply(fn)
        return self
