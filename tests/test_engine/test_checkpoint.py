import collections

import numpy as np
import pytest
import torch
from mmengine.runner import load_checkpoint
from torch import nn

from xattn_mm.engine import (
    UntrustedCheckpointError,
    is_trusted_checkpoint,
    trust_checkpoint,
)
from xattn_mm.engine import checkpoint as ckpt_module


@pytest.fixture(autouse=True)
def no_trusted_paths(monkeypatch):
    monkeypatch.setattr(ckpt_module, '_trusted_paths', set())


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_state_dict_checkpoint_loads_with_weights_only(tmp_path):
    src = _model()
    path = tmp_path / 'weights.pth'
    torch.save({'state_dict': src.state_dict(), 'meta': {'epoch': 3}}, path)
    dst = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    load_checkpoint(dst, str(path))
    for a, b in zip(src.state_dict().values(), dst.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_arbitrary_pickle_is_refused_then_loads_once_trusted(tmp_path):
    path = tmp_path / 'pickled.pth'
    torch.save(
        {
            'state_dict': _model().state_dict(),
            'payload': collections.Counter(a=1),
            'array': np.arange(3),
        },
        path,
    )
    with pytest.raises(UntrustedCheckpointError) as info:
        load_checkpoint(_model(), str(path))
    message = str(info.value)
    assert str(path) in message
    assert '--trust-checkpoint' in message
    assert 'xattn_mm.engine.trust_checkpoint' in message

    trust_checkpoint(path)
    ckpt = load_checkpoint(_model(), str(path))
    assert ckpt['payload'] == collections.Counter(a=1)


def test_trusted_directory_covers_files_below_it_only(tmp_path):
    (tmp_path / 'run' / 'sub').mkdir(parents=True)
    trust_checkpoint(tmp_path / 'run')
    assert is_trusted_checkpoint(str(tmp_path / 'run' / 'epoch_1.pth'))
    assert is_trusted_checkpoint(str(tmp_path / 'run' / 'sub' / 'a.pth'))
    assert not is_trusted_checkpoint(str(tmp_path / 'run2' / 'a.pth'))
    assert not is_trusted_checkpoint(str(tmp_path / 'a.pth'))


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_checkpoint(_model(), str(tmp_path / 'nope.pth'))
