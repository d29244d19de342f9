"""The environment the set-up builds, and the package boundaries."""

import ast
import importlib.util
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


ARROWS = {
    'core': (),
    'compat': (),
    'engine': (),
    'testing': ('mmdet',),
    'det': ('mmdet',),
    'cls': ('mmpretrain',),
    'seg': ('mmseg',),
}


@pytest.mark.parametrize('subpackage, allowed', ARROWS.items())
def test_subpackages_import_only_their_host(subpackage, allowed):
    # Arrows point one way: det/cls/seg -> core, never host <-> host.
    for path in (ROOT / 'xattn_mm' / subpackage).rglob('*.py'):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split('.')[0]
                assert top not in HOSTS or top in allowed, (
                    f'{path.relative_to(ROOT)} imports {name}'
                )


HOST_OF = {'det': 'mmdet', 'cls': 'mmpretrain', 'seg': 'mmseg'}


@pytest.mark.parametrize(
    'subpackage, host_modules',
    [
        ('det', 'mmdet.models, mmdet.datasets'),
        ('cls', 'mmpretrain.models'),
        ('seg', 'mmseg.models'),
    ],
)
def test_host_subpackages_load_no_more_hosts_than_their_host(
    subpackage, host_modules
):
    # mmdet.models itself imports mmpretrain when it is installed (ReID):
    # xattn_mm may add no host beyond what its host already loads.
    code = 'import sys, {}\nprint(sorted(m for m in {!r} if m in sys.modules))'
    ours = run_python(code.format(f'xattn_mm.{subpackage}', HOSTS))
    theirs = run_python(
        code.format(f'xattn_mm.compat.torchvision_cpu, {host_modules}', HOSTS)
    )
    assert ours.returncode == 0 and theirs.returncode == 0, (
        ours.stderr + theirs.stderr
    )
    loaded = set(ast.literal_eval(ours.stdout))
    assert HOST_OF[subpackage] in loaded
    assert loaded <= set(ast.literal_eval(theirs.stdout))


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


def load_ops_check():
    path = ROOT / 'tools' / 'misc' / 'mmcv_ops_check.py'
    spec = importlib.util.spec_from_file_location('mmcv_ops_check', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    'gpus, env, expected',
    [
        ([], {}, dict(FORCE_CUDA='0')),
        ([(9, 0)], {}, dict(FORCE_CUDA='1', TORCH_CUDA_ARCH_LIST='9.0')),
        (
            [(9, 0), (8, 0), (9, 0)],
            {},
            dict(FORCE_CUDA='1', TORCH_CUDA_ARCH_LIST='8.0;9.0'),
        ),
        (
            [(9, 0)],
            dict(TORCH_CUDA_ARCH_LIST='9.0a'),
            dict(FORCE_CUDA='1', TORCH_CUDA_ARCH_LIST='9.0a'),
        ),
        ([], dict(FORCE_CUDA='1'), dict(FORCE_CUDA='1')),
    ],
)
def test_mmcv_build_takes_cuda_ops_where_there_is_a_gpu(gpus, env, expected):
    variables = load_ops_check().build_env(env, capabilities=lambda: gpus)
    assert variables == dict(MMCV_WITH_OPS='1', **expected)


def test_mmcv_build_refuses_force_cuda_0_on_a_gpu_machine():
    with pytest.raises(ValueError, match='FORCE_CUDA=0 .* CUDA GPU'):
        load_ops_check().build_env(
            dict(FORCE_CUDA='0'), capabilities=lambda: [(9, 0)]
        )


def test_ops_check_refuses_an_mmcv_without_cuda_kernels_on_a_gpu_machine():
    tool = load_ops_check()
    ran = []

    def cpu_only_wheel():
        ran.append('cuda ops')
        raise RuntimeError(
            'sigmoid_focal_loss_forward_impl: implementation for device '
            'cuda:0 not found.'
        )

    kind, message = tool.check(
        cuda_available=lambda: True, run_cuda_ops=cpu_only_wheel
    )
    assert ran and kind == tool.CPU_ONLY
    assert 'no CUDA kernels' in message and 'cuda:0 not found' in message
    assert (
        tool.check(cuda_available=lambda: True, run_cuda_ops=lambda: None)
        is None
    )

    def no_ext():
        raise ImportError("No module named 'mmcv._ext'")

    kind, message = tool.check(import_ext=no_ext)
    assert kind == tool.NO_EXT and 'mmcv._ext' in message
    # Without CUDA only the import counts (this machine's mmcv passes).
    assert (
        tool.check(cuda_available=lambda: False, run_cuda_ops=cpu_only_wheel)
        is None
    )


def test_setup_script_builds_and_checks_through_the_ops_check():
    script = (ROOT / 'tools' / 'setup_env.sh').read_text()
    assert 'mmcv_ops_check.py' in script
    assert '"${CHECK[@]}" build-env' in script
    assert script.count('"${CHECK[@]}" check') == 2  # refuse, rebuild, recheck
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / 'tools' / 'misc' / 'mmcv_ops_check.py'),
            'check',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert 'mmcv ops OK' in proc.stdout


def test_gpu_check_wheels_are_the_set_up_versions():
    lines = (ROOT / 'requirements' / 'gpu_check.txt').read_text().splitlines()
    pins = dict(
        line.split('==') for line in lines if line and not line.startswith('#')
    )
    assert {'mmengine', 'mmdet', 'mmpretrain', 'mmsegmentation'} <= set(pins)
    for name, version in pins.items():
        assert metadata.version(name) == version, name
