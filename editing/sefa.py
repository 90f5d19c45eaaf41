"""SeFa: closed-form directions from the style layers' affine weights (no data).

A = the effective weights (``weight · scale``, [2C, w_dim]) of the style affines of synthesis
layers [start, stop) stacked row-wise, each input column divided by its L2 norm (as SeFa's
release does). The directions are the eigenvectors of AᵀA with the largest eigenvalues
(``torch.linalg.eigh`` in float64, sorted descending; each sign fixed so that its largest-|·|
entry is positive). Which eigenvector edits which property is decided on a small scored sample
(:mod:`editing.picking`); the edit is layer-wise on the same layers by default, as SeFa edits
the layers it factorised.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from vectorfind.protocols import CONTROLLED

from .directions import EditDirections
from .picking import ScoredSample, draw_sample, pick_components

DEFAULT_LAYERS = (0, 4)          # the first style layers: the 4 × 4 and 8 × 8 blocks
DEFAULT_K = 10


def affine_matrix(g, layers=DEFAULT_LAYERS, normalise: bool = True) -> torch.Tensor:
    """A [Σ 2C, w_dim] float64 for synthesis layers [start, stop)."""
    start, stop = layers
    rows = []
    for i in range(start, stop):
        st = getattr(g.synthesis, f"layer{i}").style
        rows.append(st.weight.detach().double() * st.scale)
    a = torch.cat(rows)
    return a / a.norm(dim=0, keepdim=True).clamp_min(1e-12) if normalise else a


def eigen_directions(g, layers=DEFAULT_LAYERS, k: int = DEFAULT_K, normalise: bool = True):
    """(eigenvalues [k] descending, directions [k, w_dim]) float64 (module docstring)."""
    a = affine_matrix(g, layers, normalise)
    vals, vecs = torch.linalg.eigh(a.T @ a)
    order = torch.argsort(vals, descending=True)[:k]
    vals, vecs = vals[order], vecs[:, order].T.clone()
    idx = vecs.abs().argmax(dim=1)
    vecs *= torch.sign(vecs[torch.arange(len(vecs)), idx]).unsqueeze(1)
    return vals.numpy(), vecs.numpy()


def fit_sefa(g, scorer=None, *, layers=DEFAULT_LAYERS, k: int = DEFAULT_K, n_pick: int = 64, seed: int = 0,
             sample: ScoredSample | None = None, properties=CONTROLLED, layer_wise: bool = True,
             normalise: bool = True) -> EditDirections:
    """SeFa directions for ``properties``; ``sample`` (or ``n_pick`` fresh scored samples) picks them."""
    t0 = time.perf_counter()
    vals, vecs = eigen_directions(g, layers, k, normalise)
    t_fit = time.perf_counter() - t0
    sample = sample or draw_sample(g, scorer, n_pick, seed=seed)
    coords = (sample.w - sample.w.mean(axis=0)).astype(np.float64) @ vecs.T
    picks, needed, _ = pick_components(coords, sample.scores, properties)
    ds = EditDirections("sefa", "w")
    for p, (i, sign, _) in picks.items():
        ds.add(p, sign * vecs[i])
        if layer_wise:
            ds.layers[p] = tuple(layers)
    ds.meta = {"layers": list(layers), "k": k, "eigenvalues": vals.tolist(), "normalise": normalise,
               "picks": {p: {"component": i, "sign": s, "r": r} for p, (i, s, r) in picks.items()},
               "samples_needed": needed, "n_pick": len(sample), "fit_seconds": t_fit,
               "pick_seconds": sample.seconds}
    return ds
