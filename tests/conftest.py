"""Fixtures shared by every test folder."""

import pytest
import torch


@pytest.fixture
def copy_spy(monkeypatch):
    """The ``non_blocking`` flag of every ``Tensor.to(device, ...)`` call
    (a copy to a device, not a dtype cast) made while the test runs; None
    where the call passes none."""
    flags = []
    to = torch.Tensor.to

    def spy(self, *args, **kwargs):
        target = args[0] if args else kwargs.get('device')
        if isinstance(target, (str, torch.device)):
            flags.append(kwargs.get('non_blocking'))
        return to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, 'to', spy)
    return flags


@pytest.fixture(autouse=True)
def host_checkpoint_loaders():
    """Tests that build runners through the tools' helpers install the
    checkpoint policy into mmengine; give mmengine its loaders back after
    each test, as a fresh process would have them."""
    yield
    from xattn_mm.engine import uninstall_checkpoint_policy

    uninstall_checkpoint_policy()
