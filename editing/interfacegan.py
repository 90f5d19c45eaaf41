"""InterFaceGAN: one linear SVM boundary per property in w over all samples.

Per property, the samples above the property's median are one class, the rest the other (all
samples are used; ``ratio`` < 0.5 keeps only the top and bottom fractions, as InterFaceGAN's
release does with its extremes). LinearSVC (scikit-learn, the settings of
:data:`vectorfind.svm.SVM_SETTINGS`, seeded) on the float64 w; 20 % of each class is held out
for the accuracy. The direction is the unit normal pointing to the high class, so +α raises the
property. Conditional manipulation (``edit(..., conditional=True)``) projects the direction
orthogonal to the other properties' boundaries (:func:`editing.directions.project_out`).
"""
from __future__ import annotations

import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from vectorfind.protocols import CONTROLLED
from vectorfind.svm import SVM_SEED, SVM_SETTINGS

from .directions import EditDirections, unit
from .picking import ScoredSample, draw_sample

HOLD_OUT = 0.2


def fit_boundary(w: np.ndarray, values: np.ndarray, *, ratio: float = 0.5, seed: int = 0) -> tuple[np.ndarray, dict]:
    """(unit normal toward high values float64 [dim], facts)."""
    w = np.asarray(w, np.float64)
    values = np.asarray(values, np.float64)
    order = np.argsort(-values, kind="stable")
    k = len(values) // 2 if ratio >= 0.5 else max(int(len(values) * ratio), 2)
    high, low = order[:k], order[len(values) - k:]
    rng = np.random.default_rng(seed)
    high, low = rng.permutation(high), rng.permutation(low)
    nh, nl = int(len(high) * (1 - HOLD_OUT)), int(len(low) * (1 - HOLD_OUT))
    x = np.concatenate([w[high[:nh]], w[low[:nl]]])
    y = np.concatenate([np.ones(nh), np.zeros(nl)])
    clf = LinearSVC(random_state=SVM_SEED + seed, **SVM_SETTINGS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(x, y)
    xv = np.concatenate([w[high[nh:]], w[low[nl:]]])
    yv = np.concatenate([np.ones(len(high) - nh), np.zeros(len(low) - nl)])
    acc = float((clf.predict(xv) == yv).mean()) if len(yv) else float("nan")
    converged = not any(issubclass(c.category, ConvergenceWarning) for c in caught)
    return unit(clf.coef_.reshape(-1)), {"accuracy": acc, "n_train": len(y), "n_valid": len(yv),
                                         "converged": converged}


def fit_interfacegan(g, scorer=None, *, n: int = 1000, ratio: float = 0.5, seed: int = 0,
                     sample: ScoredSample | None = None, properties=CONTROLLED) -> EditDirections:
    sample = sample or draw_sample(g, scorer, n, seed=seed)
    t0 = time.perf_counter()
    ds = EditDirections("interfacegan", "w")
    facts = {}
    for i, p in enumerate(properties):
        v, facts[p] = fit_boundary(sample.w, sample.scores[p], ratio=ratio, seed=seed * 10 + i)
        ds.add(p, v)
    ds.meta = {"ratio": ratio, "boundaries": facts, "samples_needed": len(sample),
               "fit_seconds": time.perf_counter() - t0, "sample_seconds": sample.seconds}
    return ds
