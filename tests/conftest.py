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
