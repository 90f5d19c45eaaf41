"""GANSpace: principal components of w (scikit-learn PCA), picked per property, layer-wise.

PCA (full SVD, seeded) of the w of ``n_pca`` seeded (z, label) — mapping forwards only. The
component per property is chosen by correlation on a small scored sample
(:mod:`editing.picking`); ``layers`` (property -> synthesis layer range) makes the edits
layer-wise as GANSpace's are (default: all layers).
"""
from __future__ import annotations

import time

import numpy as np
from sklearn.decomposition import PCA

from vectorfind.protocols import CONTROLLED

from .directions import EditDirections
from .picking import ScoredSample, draw_sample, pick_components

DEFAULT_K = 10


def fit_pca(w: np.ndarray, k: int = DEFAULT_K, seed: int = 0) -> PCA:
    return PCA(n_components=k, svd_solver="full", random_state=seed).fit(np.asarray(w, np.float64))


def fit_ganspace(g, scorer=None, *, n_pca: int = 2000, k: int = DEFAULT_K, n_pick: int = 64, seed: int = 0,
                 sample: ScoredSample | None = None, properties=CONTROLLED, layers: dict | None = None
                 ) -> EditDirections:
    t0 = time.perf_counter()
    w = draw_sample(g, None, n_pca, seed=seed, stream=9101, score=False).w
    pca = fit_pca(w, k, seed)
    t_fit = time.perf_counter() - t0
    sample = sample or draw_sample(g, scorer, n_pick, seed=seed)
    coords = pca.transform(np.asarray(sample.w, np.float64))
    picks, needed, _ = pick_components(coords, sample.scores, properties)
    ds = EditDirections("ganspace", "w", layers={p: tuple(r) for p, r in (layers or {}).items()})
    for p, (i, sign, _) in picks.items():
        ds.add(p, sign * pca.components_[i])
    ds.meta = {"k": k, "n_pca": n_pca, "explained_variance_ratio": pca.explained_variance_ratio_.tolist(),
               "picks": {p: {"component": i, "sign": s, "r": r} for p, (i, s, r) in picks.items()},
               "samples_needed": needed, "n_pick": len(sample), "fit_seconds": t_fit,
               "pick_seconds": sample.seconds}
    return ds
