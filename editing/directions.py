"""The direction set of every editing method and its one save / load format.

:class:`EditDirections` holds, per (property, group), one unit direction in one **space**:

* ``w``, ``mapping_split1``, ``mapping_split2``: a mid vector of the v9 mapping (spec 02 §3.1);
  ``w`` also fits every StyleGAN-family generator (v1, v3);
* ``style``: the concatenated style coordinates of all synthesis layers (:mod:`editing.edit`);
* ``label``: the conditional generator's label (the v3 reference, :mod:`editing.label`);
* ``gradient``: the per-case gradient of VectorFind's MLPs (``nets``); a gradient set may also hold
  stored vectors for the properties its nets do not edit (VectorFind's ``mixed``: eyes by gradient,
  mouth and pose by the group's SVM vector).

Group ``"all"`` is the one direction of methods that do not split by group; VectorFind SVM has
the 16 groups of :mod:`vectorfind.groups`. ``layers`` optionally maps a property to a synthesis
layer range [start, stop) for layer-wise edits (any w-space set).

Files (a folder): each vector as vectorfind's CSV (``{property}_change_{space}_vector_{group}.csv``,
header ``,0,1,…``, float32 text read back as float64), gradient nets as ``nets.pth`` (state dicts),
and ``directions.json`` (method, space, groups, layers, α scales, fit facts). Vectors are kept in
memory exactly as the CSV reads back (:func:`vectorfind.directions.stored_vector`), so a saved set
reloads to the same edit bit for bit.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.io import atomic_write_text
from vectorfind.directions import parse_vector_csv, project_out, stored_vector, vector_csv_text
from vectorfind.gradient import GradientNets
from vectorfind.protocols import CONTROLLED

SPACES = ("w", "mapping_split1", "mapping_split2", "style", "label", "gradient")
W_SPACES = ("w", "mapping_split1", "mapping_split2")      # spaces that become w (layer-wise edits possible)
ALL = "all"
MANIFEST = "directions.json"
NETS_FILE = "nets.pth"


def file_name(prop: str, space: str, group: str) -> str:
    return f"{prop}_change_{space}_vector_{group}.csv"


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    n = np.linalg.norm(v)
    if not n > 0:
        raise ValueError("zero direction cannot be normalised")
    return v / n


@dataclass
class EditDirections:
    method: str
    space: str
    vectors: dict = field(default_factory=dict)        # (property, group) -> float64 [dim] (stored values)
    layers: dict = field(default_factory=dict)         # property -> (start, stop) synthesis layers
    scales: dict = field(default_factory=dict)         # property -> α scale (calibration, truth units)
    meta: dict = field(default_factory=dict)           # fit facts: samples needed, seconds, picks, …
    nets: GradientNets | None = None                   # space "gradient" only

    def __post_init__(self):
        if self.space not in SPACES:
            raise ValueError(f"unknown space {self.space!r}; expected one of {SPACES}")

    # ------------------------------------------------------------------ contents
    @property
    def properties(self) -> tuple:
        nets = self.nets.nets if self.nets is not None else {}
        return tuple(p for p in CONTROLLED if p in nets or any(k[0] == p for k in self.vectors))

    @property
    def groups(self) -> tuple:
        return tuple(sorted({g for _, g in self.vectors})) or (ALL,)

    @property
    def linear(self) -> bool:
        return self.space != "gradient"

    def add(self, prop: str, vector, group: str = ALL) -> None:
        """Store a direction the way its CSV reads back (float32 text -> float64)."""
        self.vectors[(prop, group)] = stored_vector(np.asarray(vector, dtype=np.float64).astype(np.float32))

    def vector(self, prop: str, group: str = ALL, conditional: bool = False,
               condition_on=None) -> np.ndarray:
        """One direction; ``conditional`` projects out the other controlled properties'
        directions of the same group (or those named in ``condition_on``)."""
        key = (prop, group) if (prop, group) in self.vectors else (prop, ALL)
        if key not in self.vectors:
            raise KeyError(f"{self.method}: no {prop!r} direction for group {group!r}")
        v = self.vectors[key]
        if not conditional:
            return v
        others = [q for q in (condition_on or CONTROLLED) if q != prop and q in self.properties]
        return project_out(v, [self.vector(q, group) for q in others])

    # ------------------------------------------------------------------ files
    def save(self, folder: str | os.PathLike) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for (p, g), v in sorted(self.vectors.items()):
            atomic_write_text(folder / file_name(p, self.space, g), vector_csv_text(v.astype(np.float32)))
        if self.nets is not None:
            tmp = folder / (NETS_FILE + ".tmp")
            torch.save({"point": self.nets.point, "state_dicts": self.nets.state_dicts(),
                        "test_mse": self.nets.test_mse}, tmp)
            os.replace(tmp, folder / NETS_FILE)
        manifest = {"method": self.method, "space": self.space,
                    "vectors": [[p, g] for p, g in sorted(self.vectors)],
                    "layers": {p: list(r) for p, r in self.layers.items()},
                    "scales": {p: float(s) for p, s in self.scales.items()},
                    "meta": self.meta, "nets": self.nets is not None}
        atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True, default=_jsonable))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "EditDirections":
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"{path}: no direction set here (missing {MANIFEST})")
        m = json.loads(path.read_text())
        ds = cls(m["method"], m["space"], layers={p: tuple(r) for p, r in m["layers"].items()},
                 scales={p: float(s) for p, s in m["scales"].items()}, meta=m["meta"])
        dim = None
        for p, g in m["vectors"]:
            f = folder / file_name(p, m["space"], g)
            if not f.exists():
                raise FileNotFoundError(f"{f}: listed in {path} but missing")
            ds.vectors[(p, g)] = parse_vector_csv(f, dim=dim, what=str(f))
            dim = len(ds.vectors[(p, g)])
        if m["nets"]:
            saved = torch.load(folder / NETS_FILE, map_location="cpu", weights_only=True)
            ds.nets = GradientNets.from_state_dicts(saved["point"], saved["state_dicts"], saved["test_mse"])
        return ds


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
