"""One checkpoint-loading policy for every path a checkpoint can come from.

Every checkpoint loads with ``torch.load(weights_only=True)`` and an
allow-list (:data:`SAFE_GLOBALS`) of exactly the non-tensor types that
mmengine / mmdet / mmpretrain / mmseg checkpoints hold: mmengine's
``HistoryBuffer`` (the message hub's log scalars) and the two statistics
methods it stores, numpy arrays, scalars and dtypes (log values, the numpy
RNG state), and mmengine's ``ConfigDict``. A run's own checkpoints and the
hosts' model-zoo checkpoints therefore load anywhere, with no flag. Anything
else is refused with :class:`UntrustedCheckpointError`, which names the
file, the refused type and the opt-in (``--trust-checkpoint`` on the tools,
:func:`trust_checkpoint` in code). Trust is per file (or URL), never per
folder: where a file lies says nothing about who wrote it.

The policy covers local paths, ``http(s)://``, ``torchvision://`` /
``modelzoo://``, ``open-mmlab://`` / ``openmmlab://``, ``mmcls://``,
``s3://`` / ``petrel://`` and ``pavi://`` (:data:`SCHEMES`). The project's
own loaders (converters, the one-shot inferencer, the StochCA teacher, the
TMT source model) call :func:`load_checkpoint_file`. Runners (``load_from``,
``--resume``, ``init_cfg=dict(type='Pretrained')``) go through mmengine's
``CheckpointLoader``: :func:`install_checkpoint_policy` registers this
module's loaders there. The project's tools call it; importing xattn_mm does
not (a plugin must not change how its host loads checkpoints behind the
user's back). Users who build their own Runner call it once, or use the
scoped :func:`checkpoint_policy`.
"""

import io
import os
import os.path as osp
import pickle
import re
import tempfile
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Union
from urllib.parse import urlparse

import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

MapLocation = Optional[Union[str, torch.device, dict, Callable]]

_trusted: set = set()

OPT_IN_HINT = (
    'If you trust the file (a full unpickling can run arbitrary code), pass '
    '--trust-checkpoint to the tool, or call '
    "xattn_mm.engine.trust_checkpoint('{name}') before loading it."
)


class UntrustedCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds a type outside :data:`SAFE_GLOBALS`."""


class CheckpointReadError(OSError):
    """A checkpoint file exists but is not a readable torch file."""


def _history_buffer_attribute(owner: type, name: str) -> Callable:
    """Stand-in for ``builtins.getattr`` while unpickling: a
    ``HistoryBuffer`` pickles its ``_statistics_methods`` as
    ``getattr(HistoryBuffer, 'min')`` etc.; only those lookups are served."""
    if owner is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({getattr(owner, "__name__", owner)!r}, {name!r}) is not '
        'an allowed lookup (only HistoryBuffer statistics methods are)'
    )


def _numpy_core():
    # numpy 2 moved numpy.core to numpy._core; checkpoints name either.
    return getattr(np, '_core', None) or np.core


_HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


def _safe_globals() -> List:
    from mmengine.config import ConfigDict

    core = _numpy_core().multiarray
    globals_ = [
        HistoryBuffer,
        ConfigDict,
        np.ndarray,
        np.dtype,
        (_history_buffer_attribute, 'builtins.getattr'),
        (_history_buffer_attribute, '__builtin__.getattr'),
    ]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        globals_.append((core._reconstruct, f'{module}._reconstruct'))
        globals_.append((core.scalar, f'{module}.scalar'))
    # numpy >= 1.25 can pickle dtypes by their class (numpy.dtypes.*DType).
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        for name in dir(dtypes):
            cls = getattr(dtypes, name)
            if isinstance(cls, type) and issubclass(cls, np.dtype):
                globals_.append((cls, f'numpy.dtypes.{name}'))
    return globals_


SAFE_GLOBALS = _safe_globals()
"""The allow-list passed to ``torch.serialization.safe_globals``."""


def trust_checkpoint(name: Union[str, os.PathLike]) -> None:
    """Allow a full (unsafe) unpickling of one checkpoint.

    Args:
        name (str or PathLike): A checkpoint file or URL (as given to the
            loader). Folders are not accepted: trust is per file.

    Raises:
        IsADirectoryError: If ``name`` is a directory.
    """
    name = str(name)
    if osp.isdir(osp.expanduser(name)):
        raise IsADirectoryError(
            f'trust_checkpoint({name!r}): expected a checkpoint file or URL, '
            'got a directory (trust is per file).'
        )
    _trusted.add(_trust_key(name))


def is_trusted_checkpoint(name: str) -> bool:
    """Whether :func:`trust_checkpoint` was called for ``name``.

    Args:
        name (str): A checkpoint path or URL.

    Returns:
        bool: True if the file may be unpickled in full.
    """
    return _trust_key(name) in _trusted


def _trust_key(name: str) -> str:
    if re.match(r'^[a-zA-Z][\w+.-]*://', name):
        return name
    return osp.realpath(osp.expanduser(name))


_REFUSED = re.compile(r'GLOBAL (\S+)|unrecognized function (.+?)(?: which|$)')


def _refused_type(error: Exception) -> str:
    text = str(error)
    match = _REFUSED.search(text)
    if match:
        return (match.group(1) or match.group(2)).strip()
    return text.strip().splitlines()[-1] if text.strip() else repr(error)


def load_torch_file(
    source: Union[str, io.BytesIO],
    name: str,
    map_location: MapLocation = None,
) -> dict:
    """``torch.load`` under the policy, with errors that name the file.

    Args:
        source (str or BytesIO): A local file or its bytes.
        name (str): The name the user gave (path or URL), for trust and
            messages.
        map_location: As in :func:`torch.load`. Defaults to None.

    Returns:
        dict: The checkpoint.

    Raises:
        UntrustedCheckpointError: The file holds a type outside
            :data:`SAFE_GLOBALS` and is not trusted.
        CheckpointReadError: The file is empty, truncated or not a torch
            file.
    """
    trusted = is_trusted_checkpoint(name)
    try:
        if trusted:
            return torch.load(
                source, map_location=map_location, weights_only=False
            )
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(
                source, map_location=map_location, weights_only=True
            )
    except pickle.UnpicklingError as e:
        if not trusted and 'Weights only load failed' in str(e):
            raise UntrustedCheckpointError(
                f'Refused to load checkpoint {name}: it holds '
                f'{_refused_type(e)}, a type outside the allow-list of '
                'mmengine / OpenMMLab checkpoints '
                '(xattn_mm.engine.checkpoint.SAFE_GLOBALS). '
                + OPT_IN_HINT.format(name=name)
            ) from None
        raise CheckpointReadError(
            f'Checkpoint {name} could not be read (corrupt pickle): {e}'
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        size = (
            f'{osp.getsize(source)} bytes'
            if isinstance(source, str) and osp.isfile(source)
            else 'in memory'
        )
        reason = str(e).strip().splitlines()[0] if str(e).strip() else 'empty'
        raise CheckpointReadError(
            f'Checkpoint {name} ({size}) is not a readable torch file: it is '
            f'empty, truncated or of another format ({type(e).__name__}: '
            f'{reason}).'
        ) from None


def load_from_local(filename: str, map_location: MapLocation = None) -> dict:
    """A local checkpoint file.

    Args:
        filename (str): Path (``~`` expanded).
        map_location: As in :func:`torch.load`. Defaults to None.

    Returns:
        dict: The checkpoint.
    """
    path = osp.expanduser(filename)
    if not osp.isfile(path):
        raise FileNotFoundError(f'Checkpoint {filename} can not be found.')
    return load_torch_file(path, filename, map_location)


def load_from_http(
    filename: str,
    map_location: MapLocation = None,
    model_dir: Optional[str] = None,
    progress: bool = False,
) -> dict:
    """Download a checkpoint into torch's hub cache (rank 0 first, the other
    ranks after a barrier, as mmengine does), then load it under the policy.

    Args:
        filename (str): ``http://`` or ``https://`` URL.
        map_location: As in :func:`torch.load`. Defaults to None.
        model_dir (str, optional): Cache folder. Defaults to
            ``<torch.hub.get_dir()>/checkpoints``.
        progress (bool): Show a download progress bar. Defaults to False.

    Returns:
        dict: The checkpoint.
    """
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    cached = osp.join(model_dir, osp.basename(urlparse(filename).path))

    def fetch() -> None:
        if not osp.isfile(cached):
            os.makedirs(model_dir, exist_ok=True)
            torch.hub.download_url_to_file(filename, cached, progress=progress)

    rank, world_size = get_dist_info()
    if rank == 0:
        fetch()
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            fetch()
    return load_torch_file(cached, filename, map_location)


def _model_urls(kind: str) -> Dict[str, str]:
    """Name -> URL tables of mmengine's hub schemes."""
    from mmengine.runner import checkpoint as mm_checkpoint

    if kind == 'torchvision':
        return mm_checkpoint.get_torchvision_models()
    if kind == 'openmmlab':
        return mm_checkpoint.get_external_models()
    if kind == 'mmcls':
        return mm_checkpoint.get_mmcls_models()
    raise KeyError(kind)


def _lookup(kind: str, filename: str, name: str) -> str:
    urls = _model_urls(kind)
    if name not in urls:
        raise KeyError(
            f'{filename}: {name!r} is not a known {kind} model name.'
        )
    return urls[name]


def load_from_torchvision(
    filename: str, map_location: MapLocation = None
) -> dict:
    """``torchvision://NAME`` (or the deprecated ``modelzoo://NAME``).

    Args:
        filename (str): The prefixed model name.
        map_location: As in :func:`torch.load`. Defaults to None.

    Returns:
        dict: The checkpoint.
    """
    name = filename.split('://', 1)[1]
    url = _lookup('torchvision', filename, name)
    return load_from_http(url, map_location)


def load_from_openmmlab(
    filename: str, map_location: MapLocation = None
) -> dict:
    """``open-mmlab://NAME`` / ``openmmlab://NAME``: a URL, or a file under
    mmengine's home, from mmengine's tables (``open_mmlab.json`` there
    extends them).

    Args:
        filename (str): The prefixed model name.
        map_location: As in :func:`torch.load`. Defaults to None.

    Returns:
        dict: The checkpoint.
    """
    from mmengine.runner import checkpoint as mm_checkpoint

    name = filename.split('://', 1)[1]
    name = mm_checkpoint.get_deprecated_model_names().get(name, name)
    url = _lookup('openmmlab', filename, name)
    if url.startswith(('http://', 'https://')):
        return load_from_http(url, map_location)
    return load_from_local(
        osp.join(mm_checkpoint._get_mmengine_home(), url), map_location
    )


def load_from_mmcls(filename: str, map_location: MapLocation = None) -> dict:
    """``mmcls://NAME``, converted as mmengine does (``backbone.`` keys kept,
    ``head.`` keys renamed).

    Args:
        filename (str): The prefixed model name.
        map_location: As in :func:`torch.load`. Defaults to None.

    Returns:
        dict: The checkpoint.
    """
    from mmengine.runner import checkpoint as mm_checkpoint

    name = filename.split('://', 1)[1]
    url = _lookup('mmcls', filename, name)
    checkpoint = load_from_http(url, map_location)
    return mm_checkpoint._process_mmcls_checkpoint(checkpoint)


def load_from_ceph(
    filename: str, map_location: MapLocation = None, backend: str = 'petrel'
) -> dict:
    """``s3://`` / ``petrel://`` through mmengine's file backend.

    Args:
        filename (str): The object path.
        map_location: As in :func:`torch.load`. Defaults to None.
        backend (str): mmengine file backend. Defaults to 'petrel'.

    Returns:
        dict: The checkpoint.
    """
    from mmengine.fileio import get_file_backend

    file_backend = get_file_backend(
        filename, backend_args={'backend': backend}
    )
    with io.BytesIO(file_backend.get(filename)) as buffer:
        return load_torch_file(buffer, filename, map_location)


def load_from_pavi(filename: str, map_location: MapLocation = None) -> dict:
    """``pavi://`` model cloud paths (needs the ``pavi`` package).

    Args:
        filename (str): The model cloud path.
        map_location: As in :func:`torch.load`. Defaults to None.

    Returns:
        dict: The checkpoint.
    """
    try:
        from pavi import modelcloud
    except ImportError:
        raise ImportError(
            f'{filename}: install pavi to load checkpoints from its model '
            'cloud.'
        ) from None
    model = modelcloud.get(filename[len('pavi://') :])
    with tempfile.TemporaryDirectory() as tmp_dir:
        downloaded = osp.join(tmp_dir, model.name)
        model.download(downloaded)
        return load_torch_file(downloaded, filename, map_location)


SCHEMES: Dict[str, Callable] = {
    '': load_from_local,
    'http://': load_from_http,
    'https://': load_from_http,
    'modelzoo://': load_from_torchvision,
    'torchvision://': load_from_torchvision,
    'open-mmlab://': load_from_openmmlab,
    'openmmlab://': load_from_openmmlab,
    'mmcls://': load_from_mmcls,
    r'(\S+\:)?s3://': load_from_ceph,
    r'(\S+\:)?petrel://': load_from_ceph,
    'pavi://': load_from_pavi,
}
"""Prefix (a regular expression, as in mmengine) -> loader."""


def load_checkpoint_file(
    filename: str, map_location: MapLocation = None
) -> dict:
    """Load a checkpoint from any supported scheme under the policy.

    Args:
        filename (str): Local path, URL or prefixed model name.
        map_location: As in :func:`torch.load`. Defaults to None.

    Returns:
        dict: The checkpoint.
    """
    for prefix in sorted(SCHEMES, reverse=True):  # longest match first
        if prefix and re.match(prefix, filename):
            return SCHEMES[prefix](filename, map_location)
    return load_from_local(filename, map_location)


_displaced: List[Dict[str, Callable]] = []


def install_checkpoint_policy() -> None:
    """Register the policy's loaders in mmengine's ``CheckpointLoader`` for
    every scheme in :data:`SCHEMES` (idempotent), so runners load through
    it. :func:`uninstall_checkpoint_policy` restores mmengine's loaders."""
    if _displaced:
        return
    _displaced.append(dict(CheckpointLoader._schemes))
    for prefix, loader in SCHEMES.items():
        CheckpointLoader.register_scheme(prefix, loader, force=True)


def uninstall_checkpoint_policy() -> None:
    """Undo :func:`install_checkpoint_policy` (a no-op if not installed)."""
    if _displaced:
        CheckpointLoader._schemes = _displaced.pop()


@contextmanager
def checkpoint_policy() -> Iterator[None]:
    """The policy inside a ``with`` block only (leaves an already installed
    policy installed)."""
    installed_here = not _displaced
    install_checkpoint_policy()
    try:
        yield
    finally:
        if installed_here:
            uninstall_checkpoint_policy()


def export_checkpoint(
    src: str, dst: str, trust: bool, convert: Callable[[dict], dict]
) -> None:
    """Read a checkpoint, convert its state dict and save the weights only.

    Args:
        src (str): Training checkpoint (any scheme of the checkpoint
            policy).
        dst (str): Output file: ``meta`` (with ``exported_from``) and the
            converted ``state_dict``, no training state.
        trust (bool): Unpickle ``src`` in full (beyond the allow-list).
        convert (Callable[[dict], dict]): State dict converter.
    """
    if trust:
        trust_checkpoint(src)
    checkpoint = load_checkpoint_file(src, map_location='cpu')
    state = checkpoint.get('state_dict', checkpoint)
    meta = dict(checkpoint.get('meta') or {}, exported_from=src)
    torch.save({'meta': meta, 'state_dict': convert(state)}, dst)
