"""VectorFind's SVM and gradient methods as edit sets (adapters over :mod:`vectorfind`, no copy).

* SVM: vectorfind's per-(property, group) directions point toward *smaller* property values
  (:mod:`vectorfind.svm`); the adapter negates them (exact in float32 / float64) so that +α
  raises the property like every method here. Edits take the case's group (``edit(group=…)``,
  :func:`case_groups`).
* gradient: the trained MLPs travel as they are (space ``gradient``); the direction of a case is
  the MLP gradient at its unedited mid vector (+α raises the property already).
* stage 7's case edit (``run_vectorfind_v9.py``, ``vectorfind.cases.run_case(editor=...)``) goes
  through the same call under :func:`editing.edit.edit`: :func:`case_editor` turns the stage's
  svm / gradient / mixed directions into one set (:func:`case_set`) and the original's α into this
  set's (:func:`vectorfind_alphas`: negated where the set negated the vector, exact in float64), so
  the edited mid vectors equal vectorfind's :func:`~vectorfind.directions.apply` bit for bit.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from vectorfind.directions import DirectionSet
from vectorfind.gradient import GradientNets, train_gradient_nets
from vectorfind.groups import Medians, group_names
from vectorfind.sampling import sample
from vectorfind.svm import fit_svm_from_samples

from .directions import EditDirections
from .edit import edit_mids


def from_direction_set(ds: DirectionSet, meta: dict | None = None) -> EditDirections:
    out = EditDirections("vectorfind_svm", ds.point, meta=dict(meta or {}))
    for key, v in ds.vectors.items():
        out.vectors[key] = -np.asarray(v, dtype=np.float64)
    return out


def from_nets(nets: GradientNets, meta: dict | None = None) -> EditDirections:
    return EditDirections("vectorfind_gradient", "gradient", nets=nets, meta=dict(meta or {}))


MIXED_SVM = ("mouth", "pose")


def case_set(method: str, svm: DirectionSet | None = None, nets: GradientNets | None = None) -> EditDirections:
    """Stage 7's directions of one vectorfind method as an edit set: ``svm`` (group-wise vectors),
    ``gradient`` (the MLPs), ``mixed`` (eyes by the MLP gradient, mouth and pose by the SVM vectors)."""
    if method == "svm":
        return from_direction_set(svm)
    if method == "gradient":
        return from_nets(nets)
    if method == "mixed":                  # vectorfind's rule: eyes by gradient, mouth and pose by SVM
        vectors = {k: v for k, v in from_direction_set(svm).vectors.items() if k[0] in MIXED_SVM}
        eyes = dataclasses.replace(nets, nets={p: m for p, m in nets.nets.items() if p not in MIXED_SVM})
        return EditDirections("vectorfind_mixed", "gradient", vectors=vectors, nets=eyes)
    raise ValueError(f"unknown vectorfind method {method!r}; expected svm, gradient or mixed")


def vectorfind_alphas(ds: EditDirections, alphas: dict) -> dict:
    """vectorfind's α (its SVM vectors point to smaller values) as the α of a set made here: negated
    for the properties the set edits by a stored (negated) vector, as they are for MLP gradients."""
    nets = ds.nets.nets if ds.nets is not None else {}
    return {p: np.asarray(a, np.float64) if p in nets else -np.asarray(a, np.float64) for p, a in alphas.items()}


def case_editor(method: str, svm: DirectionSet | None = None, nets: GradientNets | None = None,
                dropout: bool = False):
    """Stage 7's case edit through the editing API: ``editor(mid [dim], alphas {property: [K]},
    group, case) -> edited float32 [K, dim]`` for ``vectorfind.cases.run_case(editor=...)`` (gradient
    dropout seeded by the case number, as vectorfind's own)."""
    ds = case_set(method, svm, nets)

    def editor(mid, alphas: dict, group, case: int) -> np.ndarray:
        k = len(next(iter(alphas.values())))
        rows = np.repeat(np.asarray(mid, np.float32).reshape(1, -1), k, axis=0)
        return edit_mids(ds, rows, vectorfind_alphas(ds, alphas), group=group if ds.vectors else None,
                         calibrated=False, dropout=dropout, dropout_seed=case).mids
    return editor


class MidView:
    """A generator seen through vectorfind's :class:`~vectorfind.protocols.MidGenerator` protocol
    (``label_dim`` from the conditional spec; the rest delegated)."""

    def __init__(self, g):
        self.g = g
        self.z_dim = g.cfg.z_dim
        self.label_dim = g.spec.label_dim

    def mid_dim(self, point):
        return self.g.mid_dim(point)

    def mid_vectors(self, z, label, point):
        return self.g.mid_vectors(z, label, point)

    def image_from_mid(self, mid, point):
        return self.g.image_from_mid(mid, point)


def vectorfind_sample(g, scorer, *, point: str = "w", n: int = 2000, seed: int = 0) -> tuple:
    """(vectorfind's seeded sample of n at ``point``, its seconds): what :func:`fit_vectorfind`
    fits on; drawn once, it serves both options (the leaderboard fits svm and gradient on one)."""
    t0 = time.perf_counter()
    s = sample(g if hasattr(g, "label_dim") else MidView(g), scorer, point, n, seed=seed)
    return s, time.perf_counter() - t0


def fit_vectorfind(method: str, g, scorer, *, point: str = "w", n: int = 2000, medians: Medians | None = None,
                   seed: int = 0, gradient_kw: dict | None = None, drawn: tuple | None = None) -> EditDirections:
    """Sample once (vectorfind's seeded sampling; ``g`` needs the v9 extraction points) and fit
    vectorfind's ``svm`` or ``gradient`` option on it. ``medians`` default to the sample's own
    (the original's rule, :meth:`Medians.from_scores`). ``drawn``: a :func:`vectorfind_sample`
    result of the same (g, scorer, point, n, seed) to fit on instead of sampling again."""
    s, sample_s = drawn if drawn is not None else vectorfind_sample(g, scorer, point=point, n=n, seed=seed)
    if len(s) != n or s.point != point:
        raise ValueError(f"the given sample has {len(s)} rows at {s.point}; expected {n} at {point}")
    medians = medians or Medians.from_scores(s.scores)
    t1 = time.perf_counter()
    if method == "svm":
        r = fit_svm_from_samples(s, medians, seed=seed)
        quality = dict(r.accuracy)
    elif method == "gradient":
        nets = train_gradient_nets(s, point, seed=seed, **dict(gradient_kw or {}))
        quality = dict(nets.test_mse)
    else:
        raise ValueError(f"unknown vectorfind method {method!r}; expected svm or gradient")
    meta = {"n": len(s), "quality": quality, "medians": medians.as_dict(), "samples_needed": len(s),
            "sample_seconds": sample_s, "fit_seconds": time.perf_counter() - t1}
    return from_direction_set(r.directions, meta) if method == "svm" else from_nets(nets, meta)


def case_groups(scores: dict, medians: Medians) -> np.ndarray:
    """The 16-group name of each case (for ``edit(group=...)`` with SVM sets)."""
    return group_names(scores, medians)
