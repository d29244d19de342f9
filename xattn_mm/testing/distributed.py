"""Run a function on two CPU ranks of a gloo process group, for the tests
of what a DDP run does across ranks."""

import os
import socket
import tempfile
from typing import Any, Callable, List

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _rank_main(
    rank: int, world_size: int, port: int, out_dir: str, fn, args
) -> None:
    # mmengine's get_rank / get_world_size read the default process group.
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size))
    dist.init_process_group(
        'gloo',
        init_method=f'tcp://127.0.0.1:{port}',
        rank=rank,
        world_size=world_size,
    )
    try:
        result = fn(rank, *args)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    torch.save(result, os.path.join(out_dir, f'{rank}.pt'))


def run_on_ranks(fn: Callable, *args, world_size: int = 2) -> List[Any]:
    """Call ``fn(rank, *args)`` in ``world_size`` spawned processes joined in
    a gloo process group on this machine.

    Args:
        fn (Callable): A module-level function (spawn pickles it by name).
        *args: Further picklable arguments.
        world_size (int): Number of ranks. Defaults to 2.

    Returns:
        list: Each rank's return value (saved with ``torch.save``), by rank.

    Raises:
        torch.multiprocessing.ProcessRaisedException: If a rank raised.
    """
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(
            _rank_main,
            args=(world_size, _free_port(), out_dir, fn, args),
            nprocs=world_size,
            join=True,
        )
        return [
            torch.load(os.path.join(out_dir, f'{r}.pt'), weights_only=True)
            for r in range(world_size)
        ]
