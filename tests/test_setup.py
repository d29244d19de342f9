"""The environment the set-up builds, and the package boundaries."""

import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOSTS = ('mmdet', 'mmseg', 'mmpretrain')


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, '-c', code],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_xattn_mm_imports_no_host_library():
    proc = run_python(
        'import sys, xattn_mm, xattn_mm.core, xattn_mm.compat.host_version\n'
        f'print(sorted(m for m in {HOSTS!r} if m in sys.modules))'
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == '[]'


@pytest.mark.parametrize(
    'subpackage, host, others',
    [
        ('det', 'mmdet', ('mmseg', 'mmpretrain')),
        ('cls', 'mmpretrain', ('mmdet', 'mmseg')),
        ('seg', 'mmseg', ('mmdet', 'mmpretrain')),
    ],
)
def test_each_host_subpackage_imports_only_its_host(subpackage, host, others):
    proc = run_python(
        f'import sys, xattn_mm.{subpackage}\n'
        f'print({host!r} in sys.modules, '
        f'[m for m in {others!r} if m in sys.modules])'
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'True []'


def test_mmcv_has_compiled_ops():
    proc = run_python('import mmcv._ext; from mmcv.ops import nms, roi_align')
    assert proc.returncode == 0, proc.stderr


def test_torchvision_imports_through_the_shim_only():
    # With the hook that the set-up's .pth installs, torchvision and
    # mmpretrain import on this CPU torch ...
    proc = run_python(
        'import sys, torchvision, mmpretrain.models\n'
        'print(torchvision.__version__)'
    )
    assert proc.returncode == 0, proc.stderr
    # ... and the hook is what makes that work when torchvision's compiled
    # library cannot load (the CUDA wheel on a CPU torch).
    proc = run_python(
        'import sys, torch\n'
        'from xattn_mm.compat import torchvision_cpu\n'
        'torchvision_cpu.uninstall()\n'
        'try:\n'
        '    import torchvision\n'
        'except RuntimeError as e:\n'
        '    print("fails without shim:", "torchvision::nms" in str(e))\n'
        'else:\n'
        '    print("compiled ops load:", torch.ops.torchvision.nms)\n'
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        'fails without shim: True' in proc.stdout
        or 'compiled ops load' in proc.stdout
    ), proc.stdout


def test_constraints_pin_the_stack():
    pins = {}
    for line in (
        (ROOT / 'requirements' / 'constraints.txt').read_text().splitlines()
    ):
        line = line.split('#')[0].strip()
        if line:
            name, _, spec = line.partition('==')
            pins[name] = spec
    assert pins['torch'] == '2.13.0'
    for name in (
        'torch',
        'mmengine',
        'mmcv',
        'mmdet',
        'mmsegmentation',
        'mmpretrain',
        'torchvision',
    ):
        assert metadata.version(name).split('+')[0] == pins[name], name


def test_host_versions_are_declared_in_packaging():
    from xattn_mm.compat.host_version import declared_host_requirements

    declared = declared_host_requirements()
    assert set(declared) == {'mmcv', 'mmdet', 'mmsegmentation', 'mmpretrain'}
    for name, req in declared.items():
        assert req.specifier.contains(metadata.version(name)), req


def test_mismatched_host_version_warns_with_the_fix(monkeypatch):
    from xattn_mm.compat import host_version

    monkeypatch.setattr(host_version.metadata, 'version', lambda name: '3.0.0')
    with pytest.warns(
        UserWarning, match=r'pip install "mmdet<3\.4\.0,>=3\.1\.0"'
    ):
        assert not host_version.check_host_version('mmdet')
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert host_version.check_host_version('mmdet')


def test_mim_extension_exposes_tools_and_configs():
    mim = ROOT / 'xattn_mm' / '.mim'
    for name in ('tools', 'configs', 'model-index.yml'):
        assert (mim / name).exists(), name
    assert (mim / 'tools' / 'train.py').is_file()
