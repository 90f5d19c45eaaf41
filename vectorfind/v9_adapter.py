"""The v9 generator as a :class:`vectorfind.protocols.MidGenerator`, plus the mid vectors of every
extraction point from one mapping forward.

:class:`V9MidGenerator` wraps anything shaped like ``stylegan_modified.v9.V9Generator`` (``cfg``,
``spec``, ``mapping``, ``mid_dim``, ``mid_from_mapping``, ``image_from_mid``): it adds ``z_dim`` /
``label_dim``, runs every call under ``torch.inference_mode`` in batches, and keeps the
generator in eval mode (ψ = 1, trunc_layers 0, fixed noise, ``w_avg`` untouched — spec 02 §3.1).

Speed (stage 7's test, ``benchmarks/bench_vectorfind.py``): the synthesis runs on the ``exact``
inference path (bit-identical to the plain one at the same batch, cached scaled weights) in
micro-batches of ``image_batch`` images. Its CPU cost per image grows with the batch (cache):
at 128 px about 15 ms at 10 images against 26 ms at 50 (1 thread). Its last bits depend on the
batch too (up to about 3e-6 of the [-1, 1] range, rarely one uint8 level), so a test's 50 images
per case run as 5 calls of 10 and a case's result does not depend on other cases. The mapping
keeps its own ``batch_size`` (the sample cache was made with it). ``path="relaxed"`` is faster
still but only within float rounding of plain (an option, not the default).

An image depends only on (z, label): the three points are reparametrisations of the same
mapping output, so :meth:`V9MidGenerator.all_mids` gives the mid vectors of all points and one
image serves them all (one sampling for all points and all n, see ``stages/vectorfind_samples``).
Loading a checkpoint is the stage's business (``stylegan_modified.v9.load_v9_generator``).
"""
from __future__ import annotations

import numpy as np
import torch

from stylegan.generator import InferencePlan

from .protocols import POINTS, check_point

PATHS = ("plain", "exact", "relaxed")


class V9MidGenerator:
    """MidGenerator over a v9 generator (module docstring)."""

    def __init__(self, generator, batch_size: int = 50, image_batch: int | None = None, path: str = "exact"):
        if path not in PATHS:
            raise ValueError(f"inference path must be one of {PATHS}, got {path!r}")
        self.g = generator.eval()
        self.batch_size = int(batch_size)                     # mapping rows per call
        self.image_batch = int(image_batch or batch_size)     # synthesis images per call
        self.path = path
        self.plan = None if path == "plain" else InferencePlan(path=path, micro_batch=0)
        self.z_dim = int(generator.cfg.z_dim)
        self.label_dim = int(generator.spec.label_dim)
        self.resolution = int(generator.cfg.resolution)

    def mid_dim(self, point: str) -> int:
        return int(self.g.mid_dim(check_point(point)))

    def _device(self):
        return self.g.truncation.w_avg.device

    @torch.inference_mode()
    def all_mids(self, z, label, points=POINTS) -> dict:
        """point -> mid vectors [N, mid_dim(point)] (float32, CPU) from one mapping forward per batch."""
        dev = self._device()
        z = torch.as_tensor(np.asarray(z, np.float32)).to(dev)
        label = torch.as_tensor(np.asarray(label, np.float32)).to(dev)
        out = {p: [] for p in points}
        for a in range(0, len(z), self.batch_size):
            res = self.g.mapping(z[a:a + self.batch_size], label[a:a + self.batch_size])
            for p in points:
                out[p].append(self.g.mid_from_mapping(res, check_point(p)).float().cpu())
        return {p: torch.cat(v) if v else torch.zeros(0, self.mid_dim(p)) for p, v in out.items()}

    def mid_vectors(self, z, label, point: str) -> torch.Tensor:
        return self.all_mids(z, label, (point,))[point]

    @torch.inference_mode()
    def image_from_mid(self, mid, point: str) -> torch.Tensor:
        """Images [N, 3, R, R] in [-1, 1] (CPU) from (edited) mid vectors at ``point``."""
        check_point(point)
        return self.g.image_from_mid(torch.as_tensor(mid), point, batch_size=self.image_batch, plan=self.plan).cpu()
