"""Words and interfaces of VectorFind-v9 (spec 02 §3–§5): extraction points, property names,
and the two protocols the algorithms talk to, so they work with any generator and judge.

Property names are defined here because the project's vocabulary module
(``pipeline/vocabulary.py``, spec 05 §3) does not exist yet; when it does, these tuples should
be imported from it instead.
"""
from __future__ import annotations

from typing import Mapping, Protocol, runtime_checkable

import numpy as np
import torch

from pipeline.vocabulary import CONTROLLED, MERGED_PROPERTIES

# ----------------------------------------------------------------------------- vocabulary

# Extraction points of the v9 mapping network (spec 02 §3.1), in the original's spelling.
POINTS = ("w", "mapping_split1", "mapping_split2")
# Mid-vector dimension of each point for the original's v9 generator (512 / 512+2048 / 512+512).
V9_MID_DIMS = {"w": 512, "mapping_split1": 2560, "mapping_split2": 1024}

# The merged property-score CNN's output order (spec 02 §1.1): index -> name.
MERGED_CNN_ORDER = MERGED_PROPERTIES
# Properties the directions control, in the order edits are added (eyes, mouth, pose; 02a M15): CONTROLLED.
# Properties that split the samples into 16 groups, in the order of the group name's letters.
GROUP_PROPERTIES = ("hair_color", "hair_length", "background_mean", "hairstyle")

METHODS = ("svm", "gradient", "mixed")


# ----------------------------------------------------------------------------- protocols

@runtime_checkable
class MidGenerator(Protocol):
    """A generator that exposes the intermediate ("mid") vectors of its mapping network.

    ``z`` is [N, z_dim] and ``label`` [N, label_dim] (float32). ``mid_vectors`` returns the mid
    vector at ``point`` ([N, mid_dim(point)], float32); ``image_from_mid`` runs the rest of the
    network on (possibly edited) mid vectors and returns images [N, 3, H, W] in [-1, 1]
    (ψ = 1, fixed noise, spec 02 §3.1 "remaining net")."""
    z_dim: int
    label_dim: int

    def mid_dim(self, point: str) -> int: ...

    def mid_vectors(self, z: torch.Tensor, label: torch.Tensor, point: str) -> torch.Tensor: ...

    def image_from_mid(self, mid: torch.Tensor, point: str) -> torch.Tensor: ...


@runtime_checkable
class PropertyScorer(Protocol):
    """Measures images [N, 3, H, W] in [-1, 1]. Returns either a mapping name -> [N] scores or an
    array [N, 8] in :data:`MERGED_CNN_ORDER` (the merged property CNN's raw output)."""

    def __call__(self, images: torch.Tensor) -> Mapping[str, np.ndarray] | np.ndarray | torch.Tensor: ...


def scores_as_dict(out, n: int | None = None) -> dict[str, np.ndarray]:
    """Normalise a scorer's output to name -> float32 [N]. An array must have the merged CNN's
    8 columns; a mapping must hold at least the controlled and group properties."""
    if isinstance(out, Mapping):
        d = {k: np.asarray(torch.as_tensor(v).detach().cpu() if isinstance(v, torch.Tensor) else v,
                           dtype=np.float32).reshape(-1) for k, v in out.items()}
    else:
        arr = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
        if arr.ndim != 2 or arr.shape[1] != len(MERGED_CNN_ORDER):
            raise ValueError(f"scorer returned an array of shape {arr.shape}; expected [N, {len(MERGED_CNN_ORDER)}] "
                             f"in the order {MERGED_CNN_ORDER}")
        d = {p: arr[:, i].astype(np.float32) for i, p in enumerate(MERGED_CNN_ORDER)}
    missing = [p for p in CONTROLLED + GROUP_PROPERTIES if p not in d]
    if missing:
        raise ValueError(f"scorer output lacks properties {missing} (has {sorted(d)})")
    if n is not None:
        bad = {k: len(v) for k, v in d.items() if len(v) != n}
        if bad:
            raise ValueError(f"scorer returned {bad} scores for {n} images")
    return d


def check_point(point: str) -> str:
    if point not in POINTS:
        raise ValueError(f"unknown extraction point {point!r}; expected one of {POINTS}")
    return point
