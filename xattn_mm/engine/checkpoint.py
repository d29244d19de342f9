"""Checkpoint loading for torch >= 2.6 that unpickles only trusted files.

torch 2.6 made ``torch.load`` default to ``weights_only=True``. mmengine
0.10.7 relies on the old default, so loading one of its own full checkpoints
(which pickle the message hub, numpy values and more) fails, and ``--resume``
with it. Turning the default off globally would unpickle every file the user
points at, including downloaded ones, which can run arbitrary code.

This module replaces mmengine's loader for local paths: a file loads with
``weights_only=True`` (state dicts of tensors and plain containers always do),
unless it is trusted. Trusted are the files under a directory or path given to
:func:`trust_checkpoint`: ``tools/train.py`` trusts the run's own work_dir
when resuming, ``tools/test.py`` trusts its work_dir, and
``--trust-checkpoint`` on either tool trusts the file the user names.
"""

import os
import os.path as osp
import pickle
from typing import Optional, Union

import torch
from mmengine.runner.checkpoint import CheckpointLoader

_trusted_paths: set = set()

OPT_IN_HINT = (
    'If you trust the file (it can run arbitrary code when unpickled), opt '
    'in with --trust-checkpoint on tools/train.py or tools/test.py, or call '
    "xattn_mm.engine.trust_checkpoint('{path}') before the runner loads it."
)


class UntrustedCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds objects that only a full unpickling can load."""


def trust_checkpoint(path: Union[str, os.PathLike]) -> None:
    """Allow a full (unsafe) unpickling of a checkpoint file, or of every
    checkpoint under a directory.

    Args:
        path (str or PathLike): A checkpoint file or a directory.
    """
    _trusted_paths.add(osp.realpath(osp.expanduser(str(path))))


def is_trusted_checkpoint(filename: str) -> bool:
    """Whether ``filename`` is, or lies under, a trusted path.

    Args:
        filename (str): A checkpoint path.

    Returns:
        bool: True if :func:`trust_checkpoint` covered it.
    """
    path = osp.realpath(osp.expanduser(filename))
    return any(
        path == trusted or path.startswith(trusted.rstrip(osp.sep) + osp.sep)
        for trusted in _trusted_paths
    )


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_local_checkpoint(
    filename: str,
    map_location: Optional[Union[str, torch.device, dict]] = None,
):
    """Load a local checkpoint; weights only unless the file is trusted.

    Registered as mmengine's loader for paths without a scheme, so
    ``load_from``, ``--resume`` and ``load_checkpoint`` all go through it.

    Args:
        filename (str): Path of the checkpoint.
        map_location (str or torch.device or dict, optional): As in
            :func:`torch.load`. Defaults to None.

    Returns:
        dict: The loaded checkpoint.

    Raises:
        FileNotFoundError: If ``filename`` is not a file.
        UntrustedCheckpointError: If an untrusted file holds objects beyond
            tensors and plain containers.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'Checkpoint {filename} can not be found.')
    if is_trusted_checkpoint(filename):
        return torch.load(
            filename, map_location=map_location, weights_only=False
        )
    try:
        return torch.load(
            filename, map_location=map_location, weights_only=True
        )
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[-1]
        raise UntrustedCheckpointError(
            f'Refused to load checkpoint {filename} with weights_only=True: '
            f'it holds objects beyond tensors and plain containers '
            f'({reason}). ' + OPT_IN_HINT.format(path=filename)
        ) from None
