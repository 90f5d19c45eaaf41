"""α calibration: one scale per (method, property) so that the largest edit moves the property
by the same amount in truth units.

On a small set of cases the property's mean change is measured for ±α (half the difference
of the two edits, so the case's own value cancels), with a probe α first (default: the std of
the cases' vectors along the direction) and then again at the α the first slope predicts; the
scale makes ``alpha_max`` (calibrated units) move the property by ``target``. The scorer is the
truth (the independent evaluator or the world's truth); the measured moves are recorded in
``meta["calibration"]``. A direction the truth sees lowering its property gets a negative scale;
the raw α is capped at :data:`MAX_PROBES` probe steps (``capped`` is recorded), so a direction
that hardly moves its property is not pushed off the generator's range.
"""
from __future__ import annotations

import numpy as np
import torch

from .directions import EditDirections
from .edit import edit, mid_of, styles_of, w_of
from .picking import as_scores

ROUNDS = 2
MAX_PROBES = 8.0        # the raw α never exceeds this many probe steps (a dead direction is not blown up)


def _probe(g, ds: EditDirections, prop: str, z, label) -> float:
    """The std of the cases' vectors along the property's direction (a natural first step)."""
    if ds.space == "label":
        return 1.0
    point = ds.nets.point if ds.space == "gradient" else ("w" if ds.space == "style" else ds.space)
    with torch.inference_mode():
        mid = mid_of(g, torch.as_tensor(z), torch.as_tensor(label) if label is not None else None, point)
        x = styles_of(g, w_of(g, mid, point)) if ds.space == "style" else mid
    x = x.numpy().astype(np.float64)
    if ds.space == "gradient":
        return float(np.sqrt(x.var(axis=0).mean()) or 1.0)
    s = float((x @ ds.vector(prop, ds.groups[0])).std())
    return s if s > 0 else 1.0


def measure_move(g, ds, prop, alpha, z, label, scorer, **kw) -> float:
    """Mean (score(+α) − score(−α)) / 2 over the cases, raw α (uncalibrated)."""
    up = edit(g, z, label, {prop: alpha}, ds, calibrated=False, **kw).images
    down = edit(g, z, label, {prop: -alpha}, ds, calibrated=False, **kw).images
    su, sd = as_scores(scorer(up), len(z))[prop], as_scores(scorer(down), len(z))[prop]
    return float(np.mean(su - sd) / 2.0)


def calibrate(g, ds: EditDirections, scorer, z, label, *, target: float, alpha_max: float = 1.0,
              properties=None, probe: dict | None = None, **edit_kw) -> dict:
    """Set ``ds.scales[p]`` for each property; returns {property: {"scale", "moves"}}."""
    out = {}
    for p in properties or ds.properties:
        step = float((probe or {}).get(p) or _probe(g, ds, p, z, label))
        a, moves, capped = step, [], False
        for _ in range(ROUNDS):
            move = measure_move(g, ds, p, abs(a), z, label, scorer, **edit_kw)
            moves.append({"raw_alpha": abs(a), "move": move})
            if abs(move) < 1e-12:
                break
            a = abs(a) * target / move                 # the raw α the slope predicts (negative: the truth says
            if abs(a) > MAX_PROBES * step:             # the direction lowers the property, so the scale flips it)
                a, capped = float(np.sign(a)) * MAX_PROBES * step, True
        scale = a / alpha_max
        ds.scales[p] = scale
        out[p] = {"scale": scale, "target": target, "alpha_max": alpha_max, "moves": moves, "capped": capped}
    ds.meta.setdefault("calibration", {}).update(out)
    return out
