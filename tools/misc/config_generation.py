"""What the config generators under tools/misc/ share: formatting the
generated texts as the project's ruff settings do, and writing them or
checking that the files on disk are current."""

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Sequence


def ruff_format(files: Dict[str, str], ruff_config: Path) -> Dict[str, str]:
    """The texts as ``ruff format`` with ``ruff_config`` writes them.

    Args:
        files (dict[str, str]): Relative path to file text.
        ruff_config (Path): The project's ``ruff.toml``.

    Returns:
        dict[str, str]: The same paths, formatted texts.
    """
    with tempfile.TemporaryDirectory() as tmp:
        for rel, text in files.items():
            path = Path(tmp) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        subprocess.run(
            [
                sys.executable,
                '-m',
                'ruff',
                'format',
                '-q',
                '--config',
                str(ruff_config),
                tmp,
            ],
            check=True,
        )
        return {rel: (Path(tmp) / rel).read_text() for rel in files}


def write_or_check(
    files: Dict[str, str], out: Path, folders: Sequence[str], check: bool
) -> int:
    """Write ``files`` under ``out`` (removing other ``*.py`` files of the
    generated ``folders``), or with ``check`` report whether the disk
    matches.

    Args:
        files (dict[str, str]): Path relative to ``out`` to file text.
        out (Path): Output folder.
        folders (Sequence[str]): Sub-folders of ``out`` that hold only
            generated configs.
        check (bool): Compare instead of writing.

    Returns:
        int: Exit status, 1 if ``check`` found stale or extra files.
    """
    stale = []
    for rel, text in files.items():
        path = out / rel
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(rel)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    expected = {out / rel for rel in files}
    extra = [
        str(p.relative_to(out))
        for folder in folders
        for p in sorted((out / folder).glob('*.py'))
        if p not in expected
    ]
    if check:
        if stale or extra:
            print(f'Out of date: {stale}; not generated: {extra}.')
            return 1
        print(f'{len(files)} files up to date.')
        return 0
    for rel in extra:
        (out / rel).unlink()
    print(f'Wrote {len(files)} files under {out}.')
    return 0
