"""Sampling (z, label) -> mid vector at one extraction point + property scores (spec 02 §3.2).

Random order, two options:

* ``"seeded"`` (default): sample i draws z then label from its own stream
  ``numpy.random.default_rng([seed, stream, i])`` (float64 draws cast to float32), so a sample
  does not depend on n, on batching or on which other samples are drawn — the first 4K samples
  of a 20K run are the 4K run.
* ``"original"``: the original's order (02a M11): the whole z matrix [n, z_dim] is drawn first,
  then the whole label matrix, from numpy's legacy normal generator (``RandomState(seed)``, or
  numpy's global RNG when ``seed`` is None, i.e. the original's unseeded run); n is cut down to
  a multiple of 20 as the original's chunks of 20 do.

Test-case latents (spec 02 §5.1, 02a M28): seeded per case, or the original's
``torch.randn(1, z_dim)`` then ``torch.randn(1, label_dim)`` per case.

Images are batched through the generator; each is quantised to uint8 (what the original kept
in memory), optionally JPEG round-tripped (OpenCV, quality 95 — the test's measurement, 02a
M21), mapped back to [-1, 1] and scored in batches.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from stylegan.generator import postprocess

from .groups import Medians, group_names
from .protocols import MidGenerator, PropertyScorer, check_point, scores_as_dict

RNG_ORDERS = ("seeded", "original")
SAMPLE_STREAM = 9001          # stream ids: sampling for fitting, test cases
CASE_STREAM = 9002
ORIGINAL_CHUNK = 20
JPEG_QUALITY = 95


def _check_order(rng_order: str) -> str:
    if rng_order not in RNG_ORDERS:
        raise ValueError(f"unknown rng_order {rng_order!r}; expected one of {RNG_ORDERS}")
    return rng_order


def draw_latents(n: int, z_dim: int, label_dim: int, seed: int | None = 0, rng_order: str = "seeded",
                 stream: int = SAMPLE_STREAM) -> tuple[np.ndarray, np.ndarray]:
    """z [n', z_dim] and label [n', label_dim], float32 (n' = n, or n // 20 · 20 for "original")."""
    if _check_order(rng_order) == "original":
        rs = np.random if seed is None else np.random.RandomState(int(seed))
        z = rs.normal(0, 1, size=(n, z_dim))
        label = rs.normal(0, 1, size=(n, label_dim))
        keep = (n // ORIGINAL_CHUNK) * ORIGINAL_CHUNK
        return z[:keep].astype(np.float32), label[:keep].astype(np.float32)
    if seed is None:
        raise ValueError("rng_order 'seeded' needs a seed")
    return draw_latents_range(0, n, z_dim, label_dim, seed, stream)


def draw_latents_range(start: int, stop: int, z_dim: int, label_dim: int, seed: int = 0,
                       stream: int = SAMPLE_STREAM) -> tuple[np.ndarray, np.ndarray]:
    """Seeded samples start … stop−1 (sample i: z then label from ``default_rng([seed, stream, i])``)."""
    z = np.empty((stop - start, z_dim), np.float32)
    label = np.empty((stop - start, label_dim), np.float32)
    for r, i in enumerate(range(start, stop)):
        rng = np.random.default_rng([int(seed), int(stream), i])
        z[r] = rng.standard_normal(z_dim)
        label[r] = rng.standard_normal(label_dim)
    return z, label


def case_latents(cases, z_dim: int, label_dim: int, seed: int | None = 0,
                 rng_order: str = "seeded", torch_generator: torch.Generator | None = None):
    """z [len(cases), z_dim], label [len(cases), label_dim] for the test cases numbered ``cases``.

    "original": per case ``torch.randn(1, z_dim)`` then ``torch.randn(1, label_dim)`` from
    ``torch_generator`` (or a generator seeded with ``seed``; torch's global RNG when both are
    None), consumed in the order of ``cases``."""
    cases = list(cases)
    if _check_order(rng_order) == "original":
        g = torch_generator
        if g is None and seed is not None:
            g = torch.Generator().manual_seed(int(seed))
        zs, ls = [], []
        for _ in cases:
            zs.append(torch.randn(1, z_dim, generator=g))
            ls.append(torch.randn(1, label_dim, generator=g))
        return (torch.cat(zs).numpy() if zs else np.zeros((0, z_dim), np.float32),
                torch.cat(ls).numpy() if ls else np.zeros((0, label_dim), np.float32))
    z = np.empty((len(cases), z_dim), np.float32)
    label = np.empty((len(cases), label_dim), np.float32)
    for row, i in enumerate(cases):
        rng = np.random.default_rng([int(seed), CASE_STREAM, int(i)])
        z[row] = rng.standard_normal(z_dim)
        label[row] = rng.standard_normal(label_dim)
    return z, label


def jpeg_round_trip(rgb_uint8: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """Encode each NHWC RGB uint8 image as JPEG (OpenCV, 4:2:0) and decode it again."""
    out = np.empty_like(rgb_uint8)
    for i, img in enumerate(rgb_uint8):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise OSError(f"JPEG encoding failed for image {i}")
        out[i] = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return out


def scorer_input(images: torch.Tensor, jpeg: bool = False) -> torch.Tensor:
    """Generator output [-1, 1] -> uint8 (GenForce rounding) [-> JPEG] -> [-1, 1] float32 NCHW,
    computed in float64 as the original (/255, −0.5, /0.5)."""
    return uint8_to_scorer(postprocess(images), jpeg)


def uint8_to_scorer(rgb_uint8: np.ndarray, jpeg: bool = False) -> torch.Tensor:
    """NHWC RGB uint8 [-> JPEG round trip] -> [-1, 1] float32 NCHW (float64 arithmetic)."""
    u8 = jpeg_round_trip(rgb_uint8) if jpeg else rgb_uint8
    x = (u8.astype(np.float64) / 255.0 - 0.5) / 0.5
    return torch.from_numpy(np.ascontiguousarray(x.astype(np.float32).transpose(0, 3, 1, 2)))


@dataclass
class Samples:
    """What one sampling run produced. ``mid`` is float32 [n, dim]; ``scores`` name -> float32 [n]."""
    point: str
    z: np.ndarray
    label: np.ndarray
    mid: np.ndarray
    scores: dict
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.mid)

    def groups(self, medians: Medians) -> np.ndarray:
        return group_names(self.scores, medians)

    def head(self, n: int) -> "Samples":
        """The first n samples (with seeded sampling: exactly the samples of a run with that n)."""
        return Samples(self.point, self.z[:n], self.label[:n], self.mid[:n],
                       {k: v[:n] for k, v in self.scores.items()}, self.seconds, dict(self.meta))


@torch.inference_mode()
def mids_and_scores(generator: MidGenerator, scorer: PropertyScorer, z: np.ndarray, label: np.ndarray, point: str,
                    batch_size: int = 50, jpeg: bool = False, progress=None) -> tuple[np.ndarray, dict]:
    """Mid vectors at ``point`` and the scorer's scores for given latents, in batches."""
    check_point(point)
    mids, parts = [], []
    for s in range(0, len(z), batch_size):
        zt = torch.from_numpy(np.ascontiguousarray(z[s:s + batch_size]))
        lt = torch.from_numpy(np.ascontiguousarray(label[s:s + batch_size]))
        mid = generator.mid_vectors(zt, lt, point)
        img = generator.image_from_mid(mid, point)
        parts.append(scores_as_dict(scorer(scorer_input(img, jpeg)), n=len(zt)))
        mids.append(mid.detach().cpu().numpy().astype(np.float32))
        if progress is not None:
            progress(min(s + batch_size, len(z)), len(z))
    dim = generator.mid_dim(point)
    mid = np.concatenate(mids) if mids else np.zeros((0, dim), np.float32)
    keys = parts[0].keys() if parts else ()
    return mid, {k: np.concatenate([p[k] for p in parts]).astype(np.float32) for k in keys}


def sample(generator: MidGenerator, scorer: PropertyScorer, point: str, n: int, *, seed: int | None = 0,
           rng_order: str = "seeded", batch_size: int = 50, jpeg: bool = False, stream: int = SAMPLE_STREAM,
           progress=None) -> Samples:
    """n samples at ``point`` (see module docstring for the random order; ``stream`` separates
    independent seeded samplings, e.g. the mixed option's three)."""
    t = time.perf_counter()
    z, label = draw_latents(n, generator.z_dim, generator.label_dim, seed, rng_order, stream)
    mid, scores = mids_and_scores(generator, scorer, z, label, point, batch_size, jpeg, progress)
    return Samples(point, z, label, mid, scores, time.perf_counter() - t,
                   {"seed": seed, "rng_order": rng_order, "jpeg": jpeg, "n_requested": n, "stream": stream})


@torch.inference_mode()
def sample_all_points(generator, scorers: dict, z: np.ndarray, label: np.ndarray, points, *, jpeg: bool = False,
                      batch_size: int = 50) -> tuple[dict, dict]:
    """One sampling for several points and judges: an image depends only on (z, label), so each
    image is made once (from the first point's mid vectors) and scored by every scorer.

    ``generator.all_mids(z, label, points)`` (:class:`vectorfind.v9_adapter.V9MidGenerator`) is used
    when present (one mapping forward), else ``mid_vectors`` per point.
    Returns (point -> float32 [n, dim], judge -> property -> float32 [n])."""
    mids = {p: [] for p in points}
    scores = {name: [] for name in scorers}
    for s in range(0, len(z), batch_size):
        zb, lb = z[s:s + batch_size], label[s:s + batch_size]
        m = generator.all_mids(zb, lb, points) if hasattr(generator, "all_mids") else \
            {p: generator.mid_vectors(torch.from_numpy(zb), torch.from_numpy(lb), p) for p in points}
        x = scorer_input(generator.image_from_mid(m[points[0]], points[0]), jpeg)
        for name, scorer in scorers.items():
            scores[name].append(scores_as_dict(scorer(x), n=len(x)))
        for p in points:
            mids[p].append(m[p].numpy().astype(np.float32))
    out_scores = {name: {k: np.concatenate([d[k] for d in parts]).astype(np.float32) for k in parts[0]}
                  for name, parts in scores.items() if parts}
    return {p: np.concatenate(v) for p, v in mids.items()}, out_scores
