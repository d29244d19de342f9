"""Compare installed host libraries with the ranges xattn_mm declares."""

import warnings
from importlib import metadata

from packaging.requirements import Requirement


def declared_host_requirements() -> dict:
    """The host version ranges from xattn_mm's packaging metadata.

    They come from ``requirements/mminstall.txt`` through the ``mim`` extra
    of ``setup.py``.

    Returns:
        dict[str, Requirement]: Requirement by distribution name; empty when
        xattn_mm is not installed (e.g. run from a source tree).
    """
    try:
        lines = metadata.requires('xattn_mm') or []
    except metadata.PackageNotFoundError:
        return {}
    requirements = {}
    for line in lines:
        req = Requirement(line)
        if req.marker is not None and req.marker.evaluate({'extra': 'mim'}):
            requirements[req.name] = req
    return requirements


def check_host_version(dist_name: str) -> bool:
    """Warn, with the command that fixes it, when an installed host library
    is outside the range xattn_mm declares.

    Args:
        dist_name (str): Distribution name, e.g. ``'mmdet'`` or
            ``'mmsegmentation'``.

    Returns:
        bool: False if a warning was issued, True otherwise.
    """
    req = declared_host_requirements().get(dist_name)
    if req is None:
        return True
    try:
        installed = metadata.version(dist_name)
    except metadata.PackageNotFoundError:
        return True
    if req.specifier.contains(installed, prereleases=True):
        return True
    wanted = f'{dist_name}{req.specifier}'
    warnings.warn(
        f'xattn_mm supports {wanted}, but {dist_name} {installed} is '
        f'installed; some components may fail. Fix: pip install "{wanted}" '
        '-c requirements/constraints.txt (or `make setup`).',
        stacklevel=2,
    )
    return False
