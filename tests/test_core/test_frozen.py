import copy

import torch
from torch import nn

from xattn_mm.core import HiddenFrozenMixin


class Owner(HiddenFrozenMixin, nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)


def test_a_hidden_model_is_frozen_unowned_and_follows_the_owner():
    owner = Owner()
    kept = owner.hide_frozen('teacher', nn.Linear(3, 3))
    assert owner.hidden_frozen('teacher') is kept
    assert owner.hidden_frozen('other') is None
    assert not kept.training and not any(
        p.requires_grad for p in kept.parameters()
    )
    # not owned: no state-dict keys, parameters or train() of its own
    assert set(owner.state_dict()) == {'fc.weight', 'fc.bias'}
    assert len(list(owner.parameters())) == 2
    owner.train()
    assert not kept.training
    # follows the owner's dtype and device changes, and its copies
    owner.double()
    assert kept.weight.dtype == torch.float64
    twin = copy.deepcopy(owner)
    assert twin.hidden_frozen('teacher') is not kept
    torch.testing.assert_close(
        twin.hidden_frozen('teacher').weight, kept.weight
    )
    # a new model under the same name replaces the old one
    owner.hide_frozen('teacher', nn.Linear(3, 3))
    assert owner.hidden_frozen('teacher') is not kept
    assert owner.hidden_frozen('teacher').weight.dtype == torch.float64
