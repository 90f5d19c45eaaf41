"""StyleSpace: single style channels, chosen by how locally they move their property.

Style coordinates are the outputs of every synthesis layer's affine (:func:`editing.edit.styles_of`);
only the modulation half (the first C of each layer's 2C) is searched, in ``layers``.

1. Candidates: on a small scored sample, the ``top`` channels whose coordinate correlates most
   strongly (|r|) with the property.
2. Locality: each candidate is moved by ``step`` of its own std on ``n_local`` of the sample's
   images; |Δimage| (mean over RGB) is split by the property's parsing region, given by
   ``regions(images) -> {property: [N, H, W] bool}`` on the unedited images (the stage-3
   parser, or the renderer's maps in the synthface world). locality = mean inside /
   (mean inside + mean outside), in [0, 1].
3. The property change Δ (scorer, mean over the same images) times the locality ranks the
   candidates; the best one is the direction (a unit vector on that channel, signed so that +α
   raises the property, α in style units).

Everything is recorded in ``meta`` (candidates, locality, Δ, samples).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from vectorfind.protocols import CONTROLLED

from .directions import EditDirections
from .edit import style_layout, styles_of, synthesize
from .picking import ScoredSample, as_scores, correlations, draw_sample

DEFAULT_TOP = 8
DEFAULT_STEP = 3.0
DEFAULT_LOCAL = 4


def modulation_channels(g, layers=None) -> np.ndarray:
    """Indices (into the concatenated styles) of the modulation coordinates of ``layers`` [start, stop)."""
    start, stop = layers or (0, g.synthesis.num_layers)
    return np.concatenate([np.arange(off, off + width // 2) for i, off, width in style_layout(g) if start <= i < stop])


@torch.inference_mode()
def fit_stylespace(g, scorer, regions, *, layers=None, n_pick: int = 64, n_local: int = DEFAULT_LOCAL,
                   top: int = DEFAULT_TOP, step: float = DEFAULT_STEP, seed: int = 0,
                   sample: ScoredSample | None = None, properties=CONTROLLED) -> EditDirections:
    t0 = time.perf_counter()
    sample = sample or draw_sample(g, scorer, n_pick, seed=seed)
    w = torch.from_numpy(sample.w)
    styles = styles_of(g, w).numpy().astype(np.float64)
    std = styles.std(axis=0)
    cand_idx = modulation_channels(g, layers)
    wl = w[:n_local]
    wp = g.truncation(wl)
    base = synthesize(g, wp)
    base_scores = as_scores(scorer(base), len(base))
    masks = {p: np.asarray(torch.as_tensor(m), dtype=bool) for p, m in regions(base).items()}
    ds = EditDirections("stylespace", "style")
    meta = {"layers": list(layers) if layers else None, "top": top, "step": step, "n_local": len(base),
            "candidates": {}, "picks": {}}
    for p in properties:
        r = correlations(styles[:, cand_idx], np.asarray(sample.scores[p], np.float64))
        best = cand_idx[np.argsort(-np.abs(r), kind="stable")[:top]]
        rows = []
        for c in best:
            delta = torch.zeros(len(base), styles.shape[1])
            delta[:, c] = float(step * std[c])
            img = synthesize(g, wp, delta)
            moved = (img - base).abs().mean(dim=1).numpy()                     # [N, H, W]
            inside = masks[p]
            m_in = moved[inside].mean() if inside.any() else 0.0
            m_out = moved[~inside].mean() if (~inside).any() else 0.0
            locality = float(m_in / (m_in + m_out)) if m_in + m_out > 0 else 0.0
            change = float(np.mean(as_scores(scorer(img), len(img))[p] - base_scores[p]))
            rows.append({"channel": int(c), "r": float(r[list(cand_idx).index(c)]), "locality": locality,
                         "change": change, "rank_score": abs(change) * locality})
        pick = max(rows, key=lambda d: d["rank_score"])
        sign = 1.0 if (pick["change"] if pick["change"] != 0 else pick["r"]) >= 0 else -1.0
        v = np.zeros(styles.shape[1])
        v[pick["channel"]] = sign
        ds.add(p, v)
        meta["candidates"][p] = rows
        meta["picks"][p] = {**pick, "sign": sign, "layer": _layer_of(g, pick["channel"])}
    meta.update({"samples_needed": len(sample), "fit_seconds": time.perf_counter() - t0})
    ds.meta = meta
    return ds


def _layer_of(g, channel: int) -> int:
    for i, off, width in style_layout(g):
        if off <= channel < off + width:
            return i
    raise ValueError(f"channel {channel} outside the styles")
