"""Checkpoints that run code when unpickled in full, for the tests of the
checkpoint policy: unpickling one creates a marker directory, so a test can
see whether any loader unpickled it."""

import os
from typing import Any

import torch


class MarkerPayload:
    """Unpickles as ``os.mkdir(marker)``.

    Args:
        marker (str): The directory a full unpickling creates.
    """

    def __init__(self, marker: str) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def save_payload_checkpoint(path: str, marker: str, **state: Any) -> str:
    """Save a checkpoint whose ``meta`` holds a :class:`MarkerPayload`.

    Args:
        path (str): Output file.
        marker (str): Directory that a full unpickling creates.
        **state: Further top-level entries (e.g. ``state_dict``).

    Returns:
        str: ``path``.
    """
    torch.save(dict(state, meta=dict(note=MarkerPayload(marker))), path)
    return str(path)
