"""Packaging for xattn_mm (``pip install -e .``; see README.md)."""

import os
import os.path as osp
import re
import shutil
import sys
import warnings

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def get_version() -> str:
    with open(osp.join(HERE, 'xattn_mm', '__init__.py')) as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def parse_requirements(name: str) -> list:
    """Requirement lines of ``requirements/<name>.txt`` (no comments)."""
    with open(osp.join(HERE, 'requirements', f'{name}.txt')) as f:
        lines = (line.split('#', 1)[0].strip() for line in f)
        return [line for line in lines if line]


def add_mim_extension() -> None:
    """Expose tools/, configs/ and model-index.yml as ``xattn_mm/.mim`` so
    that ``mim train xattn_mm <config>`` works: symlinks for editable
    installs, copies when building a wheel or sdist."""
    if 'develop' in sys.argv or 'editable_wheel' in sys.argv:
        mode = 'symlink'
    elif {'sdist', 'bdist_wheel', 'build'} & set(sys.argv):
        mode = 'copy'
    else:
        return
    mim_dir = osp.join(HERE, 'xattn_mm', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in ('tools', 'configs', 'model-index.yml'):
        src = osp.join(HERE, name)
        dst = osp.join(mim_dir, name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            try:
                os.symlink(osp.relpath(src, mim_dir), dst)
                continue
            except OSError:
                warnings.warn(
                    f'Failed to symlink {src}; copying it instead.',
                    stacklevel=2,
                )
        if osp.isdir(src):
            shutil.copytree(
                src, dst, ignore=shutil.ignore_patterns('__pycache__')
            )
        else:
            shutil.copyfile(src, dst)


if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='xattn_mm',
        version=get_version(),
        description='Cross-attention components for the OpenMMLab 2.0 stack',
        long_description=open(osp.join(HERE, 'README.md')).read(),
        long_description_content_type='text/markdown',
        license='Apache License 2.0',
        python_requires='>=3.9',
        packages=find_packages(exclude=('tests', 'tests.*', 'projects*')),
        include_package_data=True,
        package_data={'xattn_mm': ['.mim/**/*']},
        install_requires=parse_requirements('runtime'),
        extras_require={
            'mim': parse_requirements('mminstall'),
            'tests': parse_requirements('tests'),
        },
        zip_safe=False,
    )
