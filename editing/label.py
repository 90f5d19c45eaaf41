"""The v3 conditional generator's label as the reference "direction".

The set has space ``label``: the direction of a property is the one-hot vector of its label
entry, so ``edit(g3, z, label, {"eyes": a})`` renders the same z with the eyes label raised by a
(α in label units; the scale of :mod:`editing.calibrate` applies as for every method).
"""
from __future__ import annotations

import numpy as np

from vectorfind.protocols import CONTROLLED

from .directions import EditDirections


def label_directions(label_names, properties=CONTROLLED) -> EditDirections:
    names = tuple(label_names)
    missing = [p for p in properties if p not in names]
    if missing:
        raise ValueError(f"the generator's labels {names} lack {missing}")
    ds = EditDirections("v3_label", "label", meta={"label_names": list(names), "samples_needed": 0,
                                                   "fit_seconds": 0.0})
    for p in properties:
        v = np.zeros(len(names))
        v[names.index(p)] = 1.0
        ds.add(p, v)
    return ds
