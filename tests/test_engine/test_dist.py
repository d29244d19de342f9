import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(),
    reason='checks the CPU-only distributed path; CUDA is available here',
)


def run_rank_zero(code: str, port: int) -> subprocess.CompletedProcess:
    env = dict(
        RANK='0',
        LOCAL_RANK='0',
        WORLD_SIZE='1',
        MASTER_ADDR='127.0.0.1',
        MASTER_PORT=str(port),
    )
    return subprocess.run(
        [sys.executable, '-c', textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


def test_init_dist_uses_gloo_without_cuda_and_wraps_cpu_ddp():
    proc = run_rank_zero(
        """
        import torch, torch.distributed as dist
        from mmengine.dist import init_dist
        from mmengine.model import MMDistributedDataParallel
        import xattn_mm.engine
        init_dist('pytorch', backend='nccl')
        print('backend', dist.get_backend())
        # Runner.wrap_model passes the local rank as a GPU index.
        ddp = MMDistributedDataParallel(
            module=torch.nn.Linear(2, 2), device_ids=[0])
        print('device_ids', ddp.device_ids)
        """,
        port=29611,
    )
    assert proc.returncode == 0, proc.stderr
    assert 'backend gloo' in proc.stdout
    assert 'device_ids None' in proc.stdout


def test_without_the_fix_init_dist_fails_on_cpu():
    # Shows what the fix is for; fails if mmengine stops needing it.
    proc = run_rank_zero(
        """
        from mmengine.dist import init_dist
        init_dist('pytorch', backend='gloo')
        """,
        port=29612,
    )
    assert proc.returncode != 0
    assert 'cuda' in proc.stderr.lower()


def test_process_group_is_destroyed_at_exit():
    proc = run_rank_zero(
        """
        import atexit, torch.distributed as dist
        # atexit runs handlers last-in first-out: registered before
        # xattn_mm's handler, this probe runs after it.
        atexit.register(lambda: print('initialized at exit:',
                                      dist.is_initialized()))
        import xattn_mm.engine
        from mmengine.dist import init_dist
        init_dist('pytorch', backend='gloo')
        """,
        port=29613,
    )
    assert proc.returncode == 0, proc.stderr
    assert 'initialized at exit: False' in proc.stdout
