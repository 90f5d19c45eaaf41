"""One harness for the scale-out tests: a run function in 1 process and in N gloo processes on CPU.

``run(ctx) -> dict`` must be a module-level function (``mp.spawn`` pickles it by name); each
spawned process sets the torchrun variables (one thread), calls ``init_distributed("cpu")`` and
rank 0 saves its result, which :func:`single_and_gloo` returns beside the 1-process result."""
import os
import socket

import torch
import torch.multiprocessing as mp

from stylegan_modified.distributed import DistContext, init_distributed, shutdown


def _worker(rank, run, world, port, path):
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
                       "RANK": str(rank), "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1"})
    ctx = init_distributed("cpu")
    try:
        res = run(ctx)
        if rank == 0:
            torch.save(res, path)
    finally:
        shutdown(ctx)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_and_gloo(run, tmp_path, world: int = 2) -> tuple[dict, dict]:
    """(``run`` in this process, ``run`` on rank 0 of ``world`` gloo processes)."""
    single = run(DistContext())
    path = tmp_path / "rank0.pt"
    mp.spawn(_worker, args=(run, world, free_port(), str(path)), nprocs=world, join=True)
    return single, torch.load(path, weights_only=False)
