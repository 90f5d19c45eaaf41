"""The regressed start of FineTune-v9's new branch (docs/notes/v9_regress_start.md), as one function.

The original starts ``dense_new0`` / ``dense_new1`` at N(0, 0.15²) on the stored parameters, so v9
begins exactly as v1 and only GAN training moves w; on two CPU cores that takes far longer than the
budget. The regressed start (a documented deviation, off with ``start="original"``) fits the new
branch before training so that w moves each sample onto the concept side of the stage-2 CNNs:

1. ``judged`` random (z, label ~ N(0, I)) outputs of v1 are scored by ``score_fn`` (the stage-2 fold
   models); a sample is *on the concept side* of property p when it passes stage 2's filter for p;
2. class-mean directions of v1's w for the four concepts (:func:`concept_directions`);
3. ``samples`` fresh (z, label) pairs (mapping forwards only): the per-sample Δw that puts w on the
   concept side of each hyperplane with a margin of ``margin`` projection stds (:func:`concept_shift`);
4. optionally (``widen`` > 1) the shifted w spread out again around their mean, off the concept
   directions (:func:`widen_off`): the shift and the concepts narrow hair length and hairstyle,
   and the GAN epoch narrows them further (docs/notes/v9_regress_start.md, "Widening");
5. least-squares fit of the new branch to Δw (:func:`regress_new_branch`).
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch

from stylegan.generator import postprocess
from stylegan_modified.conditional import ConditionalGenerator, map_to_w, synthesize
from stylegan_modified.v9 import (V9Generator, branch_stats, concept_directions, concept_shift, regress_new_branch,
                                  widen_off)

MIN_CLASS_SHARE = 0.01      # a concept with fewer samples on one side is skipped (no direction to learn)
MIN_CONDITIONAL = 20        # a conditional direction needs this many samples on each side, else the plain one


def conditional_directions(w: np.ndarray, positive: np.ndarray, which, min_n: int = MIN_CONDITIONAL) -> tuple:
    """Class-mean directions (:func:`concept_directions`) where, for the concepts in ``which`` (column
    indices), the class means are taken only over the samples on the concept side of every *other*
    concept. A concept that is correlated with the others (glasses with age in the synthface world) then
    gets the direction that separates it among the samples the other shifts produce, not the one that
    also carries the others' features (hair colour). Falls back to the plain direction when a side has
    fewer than ``min_n`` samples. Returns (directions, offsets, {index: samples used})."""
    pos = np.asarray(positive, bool)
    dirs, offs = concept_directions(w, pos)
    used = {}
    for k in which:
        rest = np.all(np.delete(pos, k, axis=1), axis=1)
        if min(int(pos[rest, k].sum()), int((~pos[rest, k]).sum())) >= min_n:
            d, o = concept_directions(np.asarray(w)[rest], pos[rest][:, [k]])
            dirs[k], offs[k] = d[0], o[0]
            used[int(k)] = int(rest.sum())
    return dirs, offs, used


def concept_positive(scores: Mapping[str, np.ndarray], thresholds: Mapping[str, tuple[str, float]]) -> dict:
    """Per property: True where the score passes stage 2's filter (``(">=", 0.92)`` or ``("<=", 0.02)``)."""
    out = {}
    for p, (op, cut) in thresholds.items():
        s = np.asarray(scores[p], np.float64)
        out[p] = s >= cut if op == ">=" else s <= cut
    return out


def regressed_start(g9: V9Generator, g1: ConditionalGenerator, score_fn: Callable[[np.ndarray], dict],
                    thresholds: Mapping[str, tuple[str, float]], *, judged: int = 1000, samples: int = 20000,
                    margin: float = 1.0, margins: Mapping[str, float] | None = None, seed: int = 0,
                    batch_size: int = 50, conditional: tuple = (), widen: float = 1.0) -> dict:
    """Fit ``g9``'s new branch in place (module docstring); ``score_fn(uint8 NHWC) -> {property: scores}``.
    ``margins`` overrides ``margin`` per property (e.g. ``{"glass": 2.0}``: only glasses pushed further).
    ``conditional`` names properties whose direction comes from :func:`conditional_directions`.
    ``widen`` > 1 scales the shifted w's spread off the concept directions (:func:`widen_off`).
    Returns what was done: the judged shares, the concepts used, the fit's figures and branch stats."""
    unknown = sorted((set(margins or {}) | set(conditional)) - set(thresholds))
    if unknown:
        raise ValueError(f"margins / conditional: unknown properties {unknown} (known: {sorted(thresholds)})")
    m_of = {p: float((margins or {}).get(p, margin)) for p in thresholds}
    rng = np.random.default_rng([int(seed), 61])
    z = rng.normal(size=(judged, g1.cfg.z_dim)).astype(np.float32)
    y = rng.normal(size=(judged, g1.spec.label_dim)).astype(np.float32)
    scores: dict[str, list] = {}
    for a in range(0, judged, batch_size):
        imgs = postprocess(synthesize(g1, z[a:a + batch_size], y[a:a + batch_size]))
        for k, v in score_fn(imgs).items():
            scores.setdefault(k, []).append(np.asarray(v))
    scores = {k: np.concatenate(v) for k, v in scores.items()}
    pos = concept_positive(scores, thresholds)
    used = [p for p in thresholds if MIN_CLASS_SHARE <= pos[p].mean() <= 1 - MIN_CLASS_SHARE]
    done = {"method": "regressed new branch (docs/notes/v9_regress_start.md)", "judged": int(judged),
            "samples": int(samples), "margin_std": float(margin), "seed": int(seed),
            "margins_std": {p: float(m_of[p]) for p in thresholds}, "widen": float(widen),
            "v1_concept_share": {p: float(pos[p].mean()) for p in thresholds},
            "v1_all_concepts_share": float(np.all([pos[p] for p in thresholds], axis=0).mean()),
            "concepts": used, "skipped": [p for p in thresholds if p not in used]}
    if not used:
        return {**done, "fit": None}
    w = map_to_w(g1, z, y).numpy()
    dirs, offs, cond = conditional_directions(w, np.stack([pos[p] for p in used], 1),
                                              [used.index(p) for p in conditional if p in used])
    done["conditional"] = {used[k]: n for k, n in cond.items()}
    sd = (w @ dirs.T).std(0)
    zr = rng.normal(size=(samples, g1.cfg.z_dim)).astype(np.float32)
    yr = rng.normal(size=(samples, g1.spec.label_dim)).astype(np.float32)
    wr = map_to_w(g1, zr, yr).numpy()
    dw = concept_shift(wr, dirs, offs + np.array([m_of[p] for p in used]) * sd, margin=0.0)
    if widen != 1.0:
        dw = dw + widen_off(wr + dw, dirs, widen)
    fit = regress_new_branch(g9, zr, dw, label=yr, method="lstsq", seed=seed)
    zt = torch.as_tensor(zr[:1000])
    return {**done, "mean_shift_norm": float(np.linalg.norm(dw, axis=1).mean()), "fit": fit,
            "branch": branch_stats(g9, zt, torch.as_tensor(yr[:1000]))}


__all__ = ["concept_positive", "conditional_directions", "regressed_start"]
