"""A tiny split-mapping generator and a matching scorer for vectorfind tests and benchmarks.

The generator has the v9 shape in miniature: x = PixelNorm(concat(z, label·E)); z' = trunk(x);
w1 = a(z'), w2 = b(z') (wider); w = c(w1) + d(w2). Points: ``w`` = w, ``mapping_split1`` =
concat(w1, w2), ``mapping_split2`` = concat(c(w1), d(w2)). The image is tanh(s · w·M) laid out
as [3, R, R], with M a fixed matrix whose first ``w_dim`` rows are orthonormal, so the scorer
can read w back (atanh, then Mᵀ / s). Property i of :data:`MERGED_CNN_ORDER` is
w[i] (plus optional Gaussian noise): eyes grows along +e0, mouth along +e3, pose along +e4 of
w — a known answer for direction tests.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vectorfind.protocols import MERGED_CNN_ORDER

SCALE = 0.15


class TinyMidGenerator(nn.Module):
    def __init__(self, z_dim: int = 16, label_dim: int = 7, w_dim: int = 12, w2_dim: int = 24, res: int = 8,
                 seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.z_dim, self.label_dim, self.w_dim, self.w2_dim, self.res = z_dim, label_dim, w_dim, w2_dim, res
        self.embed = nn.Parameter(torch.randn(label_dim, 4, generator=g) * 0.5)
        self.trunk = nn.Parameter(torch.randn(z_dim + 4, w_dim, generator=g) / np.sqrt(z_dim + 4))
        self.a = nn.Parameter(torch.randn(w_dim, w_dim, generator=g) / np.sqrt(w_dim))
        self.b = nn.Parameter(torch.randn(w_dim, w2_dim, generator=g) / np.sqrt(w_dim))
        self.c = nn.Parameter(torch.randn(w_dim, w_dim, generator=g) / np.sqrt(w_dim))
        self.d = nn.Parameter(torch.randn(w2_dim, w_dim, generator=g) * 0.1 / np.sqrt(w2_dim))
        pixels = 3 * res * res
        q, _ = torch.linalg.qr(torch.randn(pixels, w_dim, generator=g))
        self.register_buffer("readout", q.T.contiguous())          # [w_dim, pixels], orthonormal rows
        self.requires_grad_(False)

    def mid_dim(self, point: str) -> int:
        return {"w": self.w_dim, "mapping_split1": self.w_dim + self.w2_dim, "mapping_split2": 2 * self.w_dim}[point]

    def _split(self, z, label):
        x = torch.cat([z, label @ self.embed], dim=1)
        x = x / torch.sqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        h = torch.tanh(x @ self.trunk) * 3.0
        return h @ self.a, torch.tanh(h @ self.b)

    def mid_vectors(self, z, label, point):
        w1, w2 = self._split(z.float(), label.float())
        if point == "mapping_split1":
            return torch.cat([w1, w2], dim=1)
        w1_, w2_ = w1 @ self.c, w2 @ self.d
        return torch.cat([w1_, w2_], dim=1) if point == "mapping_split2" else w1_ + w2_

    def w_from_mid(self, mid, point):
        if point == "w":
            return mid
        if point == "mapping_split2":
            return mid[:, :self.w_dim] + mid[:, self.w_dim:]
        return mid[:, :self.w_dim] @ self.c + mid[:, self.w_dim:] @ self.d

    def image_from_mid(self, mid, point):
        w = self.w_from_mid(mid.float(), point)
        return torch.tanh(SCALE * (w @ self.readout)).reshape(-1, 3, self.res, self.res)


class TinyScorer:
    """Reads w back from the image; property i = w[i] (+ noise_std · N(0,1) from its own stream)."""

    def __init__(self, generator: TinyMidGenerator, noise_std: float = 0.0, seed: int = 0, as_array: bool = False):
        self.g, self.noise_std, self.as_array = generator, float(noise_std), as_array
        self.rng = np.random.default_rng(seed)

    def __call__(self, images):
        x = torch.atanh(images.reshape(len(images), -1).clamp(-0.999, 0.999)) / SCALE
        w = (x @ self.g.readout.T).numpy()
        out = w[:, :len(MERGED_CNN_ORDER)].astype(np.float32)
        if self.noise_std:
            out = out + self.noise_std * self.rng.standard_normal(out.shape).astype(np.float32)
        return out if self.as_array else {p: out[:, i] for i, p in enumerate(MERGED_CNN_ORDER)}
