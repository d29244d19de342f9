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


def test_tool_runtime_uses_gloo_without_cuda_and_wraps_cpu_ddp():
    proc = run_rank_zero(
        """
        import torch, torch.distributed as dist
        from mmengine.config import Config
        from mmengine.registry import MODEL_WRAPPERS
        from xattn_mm.engine import prepare_cpu_dist, shutdown_dist
        cfg = Config(dict(launcher='pytorch', model_wrapper_cfg=dict(
            find_unused_parameters=False),
            env_cfg=dict(dist_cfg=dict(backend='nccl'))))
        print('started', prepare_cpu_dist(cfg))
        print('backend', dist.get_backend())
        print('wrapper', cfg.model_wrapper_cfg)
        # Runner.wrap_model passes the local rank as a GPU index.
        ddp = MODEL_WRAPPERS.build(dict(cfg.model_wrapper_cfg,
            module=torch.nn.Linear(2, 2), device_ids=[0]))
        print('device_ids', ddp.device_ids)
        print('again', prepare_cpu_dist(cfg))
        shutdown_dist(True)
        print('initialized after shutdown', dist.is_initialized())
        """,
        port=29611,
    )
    assert proc.returncode == 0, proc.stderr
    assert 'started True' in proc.stdout
    assert 'backend gloo' in proc.stdout
    assert "'type': 'CPUDistributedDataParallel'" in proc.stdout
    assert "'find_unused_parameters': False" in proc.stdout
    assert 'device_ids None' in proc.stdout
    assert 'again False' in proc.stdout
    assert 'initialized after shutdown False' in proc.stdout


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
