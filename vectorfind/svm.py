"""SVM method (spec 02 §3.4–§3.6, 02a M12–M14): one LinearSVC per (property, group).

Per group and property, the top and bottom k samples (stable descending sort, ratio 0.2) are
the classes "largest" and "smallest". Each class is shuffled ("largest" first), its first
floor(0.8·k) samples train, the rest validate; training rows are [largest-train, then
smallest-train], features are the raw float64 mid vectors. The classifier is the original's
LinearSVC (L2 penalty, squared hinge, C 1, dual solver, tol 1e-4, max_iter 1000, intercept,
random_state 2025 + SVM index). String labels sort "largest" < "smallest", so ``coef_`` points
toward "smallest": **+α·v decreases the property** and the test's correlations are negative.
The direction is ``coef_`` cast to float32, then divided by its L2 norm.

Shuffles: "seeded" (default) gives every (property, group) its own ``random.Random`` stream;
"original" draws them all, in property-then-group order, from one stream — Python's global
``random`` module when ``seed`` is None (the original's unseeded run).
"""
from __future__ import annotations

import math
import random
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from .directions import DirectionSet, unit_float32
from .groups import DEFAULT_RATIO, GROUP_ORDER, Medians, top_bottom
from .protocols import CONTROLLED, check_point

LARGEST, SMALLEST = "largest", "smallest"
SVM_SEED = 2025
TRAIN_FRACTION = 0.8
SVM_SETTINGS = dict(penalty="l2", loss="squared_hinge", C=1.0, dual=True, tol=1e-4, max_iter=1000,
                    fit_intercept=True, intercept_scaling=1)


@dataclass
class SvmFit:
    """One (property, group) classifier's outcome."""
    vector: np.ndarray          # float32 unit vector toward "smallest"
    n_train: int
    n_valid: int
    correct: int
    n_iter: int
    converged: bool


@dataclass
class SvmResult:
    directions: DirectionSet
    accuracy: dict                               # property -> Σ correct / Σ valid
    table: pd.DataFrame                          # one row per (property, group)
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)


def split_classes(top: np.ndarray, bottom: np.ndarray, rng: random.Random):
    """Shuffle each class ("largest" first) and cut floor(0.8·k) for training."""
    top_s = rng.sample(list(map(int, top)), len(top))
    bottom_s = rng.sample(list(map(int, bottom)), len(bottom))
    nt = int(math.floor(TRAIN_FRACTION * len(top)))
    nb = int(math.floor(TRAIN_FRACTION * len(bottom)))
    return top_s[:nt], top_s[nt:], bottom_s[:nb], bottom_s[nb:]


def fit_one(mid: np.ndarray, top: np.ndarray, bottom: np.ndarray, rng: random.Random, svm_index: int = 0,
            what: str = "") -> SvmFit:
    """Fit one LinearSVC on the top ("largest") vs bottom ("smallest") samples of one group."""
    tr_l, va_l, tr_s, va_s = split_classes(top, bottom, rng)
    if not tr_l or not tr_s:
        raise ValueError(f"SVM {what}: k = {len(top)} leaves no training sample per class "
                         f"(needs k >= 2, i.e. a group of >= {int(math.ceil(2 / DEFAULT_RATIO))} samples); raise n")
    x_train = np.asarray(mid[tr_l + tr_s], dtype=np.float64)
    y_train = np.array([LARGEST] * len(tr_l) + [SMALLEST] * len(tr_s))
    clf = LinearSVC(random_state=SVM_SEED + svm_index, **SVM_SETTINGS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(x_train, y_train)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    if list(clf.classes_) != [LARGEST, SMALLEST]:
        raise RuntimeError(f"unexpected class order {list(clf.classes_)}")
    va = va_l + va_s
    correct = 0
    if va:
        pred = clf.predict(np.asarray(mid[va], dtype=np.float64))
        truth = np.array([LARGEST] * len(va_l) + [SMALLEST] * len(va_s))
        correct = int((pred == truth).sum())
    return SvmFit(unit_float32(clf.coef_), len(tr_l) + len(tr_s), len(va), correct,
                  int(np.max(clf.n_iter_)), converged)


def _rng(seed: int | None, rng_order: str, prop: str, group: str, shared):
    if rng_order == "original":
        return shared
    if seed is None:
        raise ValueError("rng_order 'seeded' needs a seed")
    return random.Random(int(seed) * 1000 + CONTROLLED.index(prop) * 100 + GROUP_ORDER.index(group))


def fit_svm_directions(mid: np.ndarray, scores: dict, groups: np.ndarray, point: str, *,
                       properties=CONTROLLED, ratio: float = DEFAULT_RATIO, seed: int | None = 0,
                       rng_order: str = "seeded") -> SvmResult:
    """48 (or len(properties) × 16) SVM directions from sampled mid vectors, scores and group names.

    Every one of the 16 groups must hold samples (an empty group fails, naming it)."""
    check_point(point)
    t0 = time.perf_counter()
    groups = np.asarray(groups, dtype=str)
    counts = {g: int((groups == g).sum()) for g in GROUP_ORDER}
    empty = [g for g, c in counts.items() if c == 0]
    if empty:
        raise ValueError(f"groups {empty} have no sample among {len(groups)}; raise n")
    shared = None
    if rng_order == "original":        # the module itself: its functions draw from Python's global stream
        shared = random.Random(int(seed)) if seed is not None else random
    ds = DirectionSet(point)
    rows = []
    for p in properties:
        values = np.asarray(scores[p], dtype=np.float32)
        for g in GROUP_ORDER:
            idx = np.flatnonzero(groups == g)
            top, bottom = top_bottom(idx, values, ratio)
            t = time.perf_counter()
            fit = fit_one(mid, top, bottom, _rng(seed, rng_order, p, g, shared), 0, what=f"{p}/{g}")
            ds.add(p, g, fit.vector)
            rows.append({"property": p, "group": g, "group_size": len(idx), "k": len(top), "n_train": fit.n_train,
                         "n_valid": fit.n_valid, "correct": fit.correct, "n_iter": fit.n_iter,
                         "converged": fit.converged, "seconds": round(time.perf_counter() - t, 4)})
    table = pd.DataFrame(rows)
    acc = {}
    for p in properties:
        sub = table[table.property == p]
        acc[p] = float(sub.correct.sum() / sub.n_valid.sum()) if sub.n_valid.sum() else float("nan")
    return SvmResult(ds, acc, table, time.perf_counter() - t0,
                     {"ratio": ratio, "seed": seed, "rng_order": rng_order, "n": len(groups),
                      "unconverged": int((~table.converged).sum())})


def fit_svm_from_samples(samples, medians: Medians, **kw) -> SvmResult:
    """Convenience: group the samples with ``medians`` and fit (``samples``: :class:`Samples`)."""
    return fit_svm_directions(samples.mid, samples.scores, samples.groups(medians), samples.point, **kw)
