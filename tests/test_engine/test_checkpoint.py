"""The checkpoint policy (xattn_mm.engine.checkpoint): weights_only + the
allow-list on every scheme, per-file trust, and errors that name the file.

A payload checkpoint (xattn_mm.testing.checkpoints) creates a marker directory
when unpickled in full; on every path below the marker must never appear."""

import functools
import http.server
import json
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.logging import MessageHub
from mmengine.runner import checkpoint as mm_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

from xattn_mm.engine import (
    CheckpointReadError,
    UntrustedCheckpointError,
    checkpoint_policy,
    export_checkpoint,
    get_random_state,
    install_checkpoint_policy,
    load_checkpoint_file,
    trust_checkpoint,
    uninstall_checkpoint_policy,
)
from xattn_mm.engine import checkpoint as policy
from xattn_mm.testing.checkpoints import save_payload_checkpoint

STATE = {'w': torch.arange(4.0)}


@pytest.fixture
def files(tmp_path, monkeypatch):
    """A payload checkpoint and a run-like one in a served folder; torch's
    hub cache and mmengine's home in tmp; no trusted files."""
    monkeypatch.setattr(policy, '_trusted', set())
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setenv('MMENGINE_HOME', str(tmp_path / 'mmengine_home'))
    served = tmp_path / 'served'
    served.mkdir()
    marker = tmp_path / 'payload_ran'
    save_payload_checkpoint(served / 'payload.pth', marker, state_dict=STATE)
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(served)
    )
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f'http://127.0.0.1:{server.server_address[1]}/payload.pth'
    yield types.SimpleNamespace(
        tmp=tmp_path, served=served, marker=marker, url=url
    )
    server.shutdown()
    server.server_close()


def run_like_checkpoint() -> dict:
    """What an mmengine training checkpoint holds beyond tensors."""
    hub = MessageHub('policy_test')
    for it in range(3):
        hub.update_scalar('train/loss', np.float32(0.5 + it))
        hub.update_scalar('train/lr', 0.01)
    return dict(
        meta=dict(
            epoch=1,
            iter=3,
            seed=np.int64(7),
            cfg='model = dict()',
            dataset_meta=dict(classes=('a', 'b'), palette=[(1, 2, 3)]),
            extra=ConfigDict(a=1),
        ),
        state_dict=STATE,
        message_hub=hub.state_dict(),
        random_state=[get_random_state()],
    )


def test_run_checkpoints_load_anywhere_without_trust(tmp_path, files):
    path = tmp_path / 'elsewhere' / 'epoch_1.pth'
    path.parent.mkdir()
    torch.save(run_like_checkpoint(), path)
    loaded = load_checkpoint_file(str(path))
    assert loaded['meta']['seed'] == 7
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert buffer.current() == pytest.approx(2.5)  # HistoryBuffer works
    assert buffer.mean() == pytest.approx(1.5)
    restored = MessageHub('policy_test_resumed')
    restored.load_state_dict(loaded['message_hub'])
    assert restored.get_scalar('train/lr').current() == 0.01


def refused(files, name: str, load, *args) -> str:
    """``load(*args)`` refuses the payload with a message naming ``name``."""
    with pytest.raises(UntrustedCheckpointError) as info:
        load(*args)
    message = str(info.value)
    assert name in message and '--trust-checkpoint' in message
    assert 'posix.mkdir' in message  # the refused type
    assert not files.marker.exists()
    return message


def test_payload_refused_on_every_scheme(files, monkeypatch):
    local = str(files.served / 'payload.pth')
    refused(files, local, load_checkpoint_file, local)
    refused(files, files.url, load_checkpoint_file, files.url)

    # Hub names resolve to the loopback URL.
    urls = {'torchvision': {'m': files.url}, 'mmcls': {'m': files.url}}
    real = policy._model_urls
    monkeypatch.setattr(
        policy, '_model_urls', lambda kind: urls.get(kind) or real(kind)
    )
    for name in ('torchvision://m', 'modelzoo://m', 'mmcls://m'):
        refused(files, files.url, load_checkpoint_file, name)
    # open-mmlab:// reads mmengine's tables, extended by MMENGINE_HOME's.
    home = files.tmp / 'mmengine_home'
    home.mkdir()
    (home / 'payload.pth').write_bytes(Path(local).read_bytes())
    (home / 'open_mmlab.json').write_text(
        json.dumps(dict(remote=files.url, here='payload.pth'))
    )
    for name in ('open-mmlab://remote', 'openmmlab://remote'):
        refused(files, files.url, load_checkpoint_file, name)
    refused(files, 'payload.pth', load_checkpoint_file, 'open-mmlab://here')

    # s3:// through mmengine's file backend; pavi:// through its client.
    class Backend:
        def get(self, filename):
            return Path(local).read_bytes()

    monkeypatch.setattr(
        'mmengine.fileio.get_file_backend', lambda *a, **k: Backend()
    )
    name = 's3://bucket/payload.pth'
    refused(files, name, load_checkpoint_file, name)

    class Model:
        name = 'payload.pth'

        def download(self, path):
            Path(path).write_bytes(Path(local).read_bytes())

    pavi = types.ModuleType('pavi')
    pavi.modelcloud = types.SimpleNamespace(get=lambda path: Model())
    monkeypatch.setitem(sys.modules, 'pavi', pavi)
    refused(files, 'pavi://x', load_checkpoint_file, 'pavi://x')


def test_installed_policy_guards_mmengine_loaders(files):
    local = str(files.served / 'payload.pth')
    original = dict(CheckpointLoader._schemes)
    # The hole: mmengine's URL loader unpickles in full.
    mm_checkpoint.load_from_http(files.url)
    assert files.marker.exists()
    files.marker.rmdir()
    (files.tmp / 'torch_home').rename(files.tmp / 'torch_home_used')

    install_checkpoint_policy()
    try:
        for name in (local, files.url):
            refused(files, name, CheckpointLoader.load_checkpoint, name)
            model = torch.nn.Linear(2, 2)
            refused(files, name, mm_checkpoint.load_checkpoint, model, name)
    finally:
        uninstall_checkpoint_policy()
    assert CheckpointLoader._schemes == original
    with checkpoint_policy():
        assert CheckpointLoader._schemes['http://'] is policy.load_from_http
    assert CheckpointLoader._schemes == original


def test_project_loaders_go_through_the_policy(files, tmp_path):
    from xattn_mm.cls.models.backbones.stoch_ca import _load_teacher_state
    from xattn_mm.seg.models.segmentors.tmt_encoder_decoder import (
        TMTEncoderDecoder,
    )

    local = str(files.served / 'payload.pth')
    dst = str(tmp_path / 'out.pth')
    for load in (
        lambda: export_checkpoint(local, dst, False, dict),
        lambda: _load_teacher_state(files.url),
        lambda: TMTEncoderDecoder._load_source_checkpoint(
            types.SimpleNamespace(source_checkpoint=local), None
        ),
    ):
        with pytest.raises(UntrustedCheckpointError):
            load()
        assert not files.marker.exists()
    assert not Path(dst).exists()


def test_trust_is_per_file(files, tmp_path):
    local = files.served / 'payload.pth'
    with pytest.raises(IsADirectoryError, match='per file'):
        trust_checkpoint(files.served)
    trust_checkpoint(str(local))
    assert load_checkpoint_file(str(local))['state_dict']['w'].sum() == 6
    assert files.marker.exists()  # trusted: unpickled in full
    copy = tmp_path / 'copy.pth'
    copy.write_bytes(local.read_bytes())
    files.marker.rmdir()
    refused(files, str(copy), load_checkpoint_file, str(copy))


def test_unreadable_files_are_named(tmp_path):
    empty = tmp_path / 'empty.pth'
    empty.touch()
    good = tmp_path / 'good.pth'
    torch.save(run_like_checkpoint(), good)
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for path in (empty, truncated):
        with pytest.raises(CheckpointReadError, match=str(path)) as info:
            load_checkpoint_file(str(path))
        assert 'truncated' in str(info.value)
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        load_checkpoint_file(str(tmp_path / 'missing.pth'))
