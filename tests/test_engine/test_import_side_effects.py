"""Importing xattn_mm.det / .cls / .seg registers modules and changes
nothing else in the process: mmengine's checkpoint loaders, its dist
functions and DDP wrapper, sys.excepthook, atexit and mmcv's functions stay
the hosts'. Checked in a fresh interpreter that imports the hosts first."""

import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import atexit, inspect, sys, torch
    import mmcv, mmcv.image, mmengine.dist.utils as du
    import mmengine.model.wrappers.distributed as mw
    import mmdet.models, mmdet.datasets, mmdet.engine, mmdet.evaluation
    import mmdet.visualization, mmpretrain.models, mmpretrain.datasets
    import mmseg.models, mmseg.datasets
    from mmengine.runner.checkpoint import CheckpointLoader

    def state():
        return dict(
            loaders=dict(CheckpointLoader._schemes),
            init_dist=[getattr(du, n) for n in dir(du) if 'init_dist' in n],
            ddp_init=mw.MMDistributedDataParallel.__init__,
            excepthook=sys.excepthook,
            adjust_hue=(mmcv.adjust_hue, mmcv.image.adjust_hue),
            mmcv=dict(vars(mmcv)),
            set_device=torch.cuda.set_device,
            torch_load=torch.load,
        )

    registered = []
    register = atexit.register
    def spy(fn, *args, **kwargs):
        registered.append(getattr(fn, '__module__', '') or '')
        return register(fn, *args, **kwargs)
    atexit.register = spy
    before = state()
    import xattn_mm.det, xattn_mm.cls, xattn_mm.seg
    after = state()
    atexit.register = register
    changed = [k for k in before if before[k] != after[k]]
    ours = [m for m in registered if m.startswith('xattn_mm')]
    print('changed', changed, 'atexit from xattn_mm', ours)
    """
)


def test_importing_the_plugin_changes_nothing_global():
    proc = subprocess.run(
        [sys.executable, '-c', PROBE],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert 'changed [] atexit from xattn_mm []' in proc.stdout, proc.stdout
