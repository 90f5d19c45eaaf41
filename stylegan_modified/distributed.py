"""Scale-out for the stage-5 training loops: torchrun + DistributedDataParallel, sharded seeded data.

    torchrun --nproc_per_node 2 run_stylegan_fine_tuning_v3.py      # 2 processes (gloo on CPU, nccl on GPU)

* :func:`init_distributed` reads torchrun's environment (``WORLD_SIZE``, ``RANK``,
  ``LOCAL_RANK``); with one process nothing is initialised and everything below degrades to
  plain single-process code. The device is ``cuda:LOCAL_RANK`` when CUDA is present (backend
  nccl), else the CPU (backend gloo).
* :func:`shard_indices` is a seeded ``DistributedSampler`` over the data set: the epoch's
  permutation depends only on (seed, epoch), and rank ``r`` of ``W`` takes positions
  ``r, r + W, ...`` of it. With a per-process batch ``B / W`` the union of the ranks' k-th
  batches is exactly the k-th batch of a single process at batch ``B``.
* :func:`step_generator` gives every step (and purpose) its own ``torch.Generator`` seeded
  from (seed, epoch, step, purpose): random draws do not depend on what ran before, so a run
  resumed at any step draws what the uninterrupted run drew. Draws are made for the *global*
  batch and each rank takes its rows (:meth:`DistContext.local_rows`), so N processes draw what
  one process draws.
* Loss modules (one forward computing the whole loss) are wrapped in
  ``DistributedDataParallel`` (:meth:`DistContext.wrap`): gradients are averaged over ranks,
  i.e. the gradient of the global-batch mean.

What does not carry over exactly: layers that mix samples inside a batch (the conditional
discriminator's minibatch-std, group 16) see each process's batch; with strided groups (the
core's layout) the groups coincide with a single process's whenever the group size is at
most the per-process batch. Style mixing and randomised noise draw per-process shapes.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def describe(self) -> dict:
        return {"world_size": self.world, "backend": self.backend, "device": str(self.device)}

    def local_rows(self, t):
        """This rank's rows of a global-batch tensor (positions rank, rank + world, ...)."""
        return t[self.rank::self.world] if self.world > 1 else t

    def per_rank_batch(self, global_batch: int) -> int:
        if global_batch % self.world:
            raise ValueError(f"the global batch size {global_batch} must be divisible by the number of "
                             f"processes ({self.world})")
        return global_batch // self.world

    def mean(self, value) -> torch.Tensor:
        """Mean over ranks of a scalar / tensor (a detached copy)."""
        t = torch.as_tensor(value, dtype=torch.float64).detach().clone().to(self.device)
        if self.world > 1:
            dist.all_reduce(t)
            t /= self.world
        return t.cpu()

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenation of every rank's tensor (equal shapes), in global-batch order."""
        t = t.detach()
        if self.world == 1:
            return t.cpu()
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous())
        stacked = torch.stack([p.cpu() for p in parts], dim=1)      # [b_local, world, ...] -> global order
        return stacked.reshape(-1, *t.shape[1:])

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def broadcast_object(self, obj):
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``DistributedDataParallel(module)`` with several processes, else the module itself."""
        if self.world == 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)


def init_distributed(device: str = "auto", timeout_minutes: int = 180) -> DistContext:
    """The process's context: torchrun's environment when ``WORLD_SIZE`` > 1, else a single process.

    ``device``: "auto" (CUDA when available), "cpu" or "cuda"."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but CUDA is not available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world == 1:
        return DistContext(0, 1, 0, dev, None)
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return DistContext(rank, world, local, dev, backend)


def shutdown(ctx: DistContext) -> None:
    if ctx.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def shard_indices(n: int, seed: int, epoch: int, ctx: DistContext, shuffle: bool = True,
                  drop_last: bool = False) -> np.ndarray:
    """This rank's data indices for ``epoch`` (a seeded ``DistributedSampler``; see the module doc)."""
    sampler = DistributedSampler(range(n), num_replicas=ctx.world, rank=ctx.rank, shuffle=shuffle,
                                 seed=int(seed), drop_last=drop_last)
    sampler.set_epoch(int(epoch))
    return np.fromiter(iter(sampler), dtype=np.int64)


def epoch_batches(n: int, global_batch: int, seed: int, epoch: int, ctx: DistContext,
                  drop_last: bool = False) -> list[np.ndarray]:
    """This rank's batches of one epoch: batch k holds the rank's rows of global batch k."""
    local = shard_indices(n, seed, epoch, ctx)
    b = ctx.per_rank_batch(global_batch)
    out = [local[i:i + b] for i in range(0, len(local), b)]
    if drop_last and out and len(out[-1]) < b:
        out.pop()
    return out


def step_seed(seed: int, epoch: int, step: int, purpose: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(epoch), int(step), int(purpose), 55]).generate_state(1)[0])


def step_generator(seed: int, epoch: int, step: int, purpose: int, device=None) -> torch.Generator:
    """A generator for one (epoch, step, purpose): independent of everything drawn before."""
    g = torch.Generator(device=device if device is not None else "cpu")
    return g.manual_seed(step_seed(seed, epoch, step, purpose))
