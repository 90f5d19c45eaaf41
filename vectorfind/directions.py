"""Direction vectors: the original's vector CSV format, a set of them, and the edit itself.

File format (spec 02 §3.6, 02a M14, §D): ``{property}_change_{point}_vector_{group}.csv``, a
pandas CSV with an unnamed index column — header ``,0,1,…,dim−1`` — and one data row with
index ``0``. The original writes the float32 unit vector (pandas' shortest float32 text) and
reads it back as **float64**; :func:`stored_vector` gives exactly those float64 values without a
file, so a direction used in memory equals the one a later run loads.

The edit (02a M15): m′ = float32(((m + α_e·v_e) + α_m·v_m) + α_p·v_p) with the float32 mid
vector promoted to float64, the α·v terms in float64, added in the order eyes, mouth, pose,
cast to float32 once at the end.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
import torch

from pipeline.io import atomic_write_text

from .groups import GROUP_ORDER
from .protocols import CONTROLLED, check_point


def project_out(v, others) -> np.ndarray:
    """``v`` minus its least-squares projection onto span(``others``), unit L2 norm (float64): the
    conditional manipulation of InterFaceGAN, for any number of conditions (SVM groups, editing sets,
    the gradient method's local conditioning)."""
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    others = [np.asarray(o, dtype=np.float64).reshape(-1) for o in others]
    if others:
        n = np.stack(others, axis=1)                              # [dim, k]
        v = v - n @ np.linalg.lstsq(n, v, rcond=None)[0]
    norm = np.linalg.norm(v)
    if not norm > 0:
        raise ValueError("zero direction cannot be normalised (it lies in the span of the ones it is "
                         "conditioned on)" if others else "zero direction cannot be normalised")
    return v / norm


def vector_file_name(prop: str, point: str, group: str) -> str:
    return f"{prop}_change_{point}_vector_{group}.csv"


def vector_frame(vector) -> pd.DataFrame:
    """The one-row frame the original writes (float32 values, columns 0 … dim−1, index 0)."""
    v = np.asarray(vector, dtype=np.float32).reshape(1, -1)
    return pd.DataFrame(v)


def vector_csv_text(vector) -> str:
    return vector_frame(vector).to_csv(lineterminator="\n")


def parse_vector_csv(text_or_path, dim: int | None = None, what: str = "vector CSV") -> np.ndarray:
    """Read one vector CSV (text, path or file object) -> float64 [dim]; checks header and row."""
    src = io.StringIO(text_or_path) if isinstance(text_or_path, str) and "\n" in text_or_path else text_or_path
    df = pd.read_csv(src, index_col=0)
    n = df.shape[1]
    expected = [str(i) for i in range(n)]
    if list(df.columns) != expected or df.index.name is not None:
        first = [str(df.index.name or "")] + list(df.columns[:3])
        raise ValueError(f"{what}: header must be ',0,1,…,dim-1'; starts {first}")
    if df.shape[0] != 1 or df.index[0] != 0:
        raise ValueError(f"{what}: expected one data row with index 0, found {df.shape[0]} rows "
                         f"(index {list(df.index[:3])})")
    if dim is not None and n != dim:
        raise ValueError(f"{what}: {n} columns, expected dim {dim}")
    v = df.to_numpy(dtype=np.float64)[0]
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{what}: row 0 has non-finite values at columns {np.flatnonzero(~np.isfinite(v))[:5].tolist()}")
    return v


def stored_vector(vector) -> np.ndarray:
    """The float64 values a float32 vector has after the original's CSV write and read."""
    return parse_vector_csv(vector_csv_text(vector))


def unit_float32(coef) -> np.ndarray:
    """The original's normalisation (02a M14): cast to float32 first, then divide by the L2 norm."""
    v = np.asarray(coef).reshape(-1).astype(np.float32)
    norm = np.linalg.norm(v)
    if not norm > 0:
        raise ValueError("zero direction vector cannot be normalised")
    return v / norm


@dataclass
class DirectionSet:
    """Per (property, group) unit directions at one extraction point, as float64 "stored" values."""
    point: str
    vectors: dict = field(default_factory=dict)          # (property, group) -> float64 [dim]

    def __post_init__(self):
        check_point(self.point)

    @property
    def dim(self) -> int:
        return len(next(iter(self.vectors.values())))

    @property
    def properties(self) -> tuple:
        return tuple(p for p in CONTROLLED if any(k[0] == p for k in self.vectors))

    def add(self, prop: str, group: str, vector_float32) -> None:
        """Store a freshly found float32 vector the way the original's file would hold it."""
        self.vectors[(prop, group)] = stored_vector(vector_float32)

    def for_group(self, group: str, properties: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        props = tuple(properties) if properties is not None else self.properties
        missing = [p for p in props if (p, group) not in self.vectors]
        if missing:
            raise KeyError(f"no {missing} direction for group {group!r} at {self.point}")
        return {p: self.vectors[(p, group)] for p in props}

    def save(self, folder: str | os.PathLike) -> list[Path]:
        """Write every vector as the original's CSV (atomic); returns the paths."""
        out = []
        for (p, g), v in sorted(self.vectors.items(), key=lambda kv: (CONTROLLED.index(kv[0][0]), GROUP_ORDER.index(kv[0][1]))):
            path = Path(folder) / vector_file_name(p, self.point, g)
            atomic_write_text(path, vector_csv_text(v.astype(np.float32)))
            out.append(path)
        return out

    @classmethod
    def load(cls, folder: str | os.PathLike, point: str, properties: Iterable[str] = CONTROLLED,
             groups: Iterable[str] = GROUP_ORDER, dim: int | None = None) -> "DirectionSet":
        """Load the original's vector CSVs (``{p}_change_{point}_vector_{g}.csv``) from ``folder``."""
        check_point(point)
        ds = cls(point)
        missing = []
        for p in properties:
            for g in groups:
                path = Path(folder) / vector_file_name(p, point, g)
                if not path.exists():
                    missing.append(path.name)
                    continue
                ds.vectors[(p, g)] = parse_vector_csv(path, dim=dim, what=str(path))
                dim = dim or len(ds.vectors[(p, g)])
        if missing:
            raise FileNotFoundError(f"{len(missing)} direction files missing in {folder}: {missing[:4]}"
                                    + (" …" if len(missing) > 4 else ""))
        return ds


def apply(mid, alphas: Mapping[str, object], directions: Mapping[str, np.ndarray]):
    """Edited mid vectors with the original's float64 arithmetic (see module docstring).

    ``mid``: float32 [dim] or [N, dim] (numpy or torch); ``alphas``: property -> scalar or [N];
    ``directions``: property -> [dim] (or [N, dim]). Terms are added in the order eyes, mouth,
    pose; properties without an α are skipped. Returns float32 of ``mid``'s type and shape
    (torch tensors keep their device)."""
    is_torch = isinstance(mid, torch.Tensor)
    m = mid.detach().cpu().numpy() if is_torch else np.asarray(mid)
    if m.dtype != np.float32:
        raise TypeError(f"mid vectors must be float32, got {m.dtype}")
    out = m.astype(np.float64)
    for p in CONTROLLED:
        if p not in alphas:
            continue
        if p not in directions:
            raise KeyError(f"alpha given for {p!r} but no direction")
        a = np.asarray(alphas[p], dtype=np.float64)
        v = np.asarray(directions[p], dtype=np.float64)
        if v.shape[-1] != m.shape[-1]:
            raise ValueError(f"{p} direction has dim {v.shape[-1]}, mid vectors {m.shape[-1]}")
        term = (a[..., None] if a.ndim else a) * v
        out = out + term
    res = out.astype(np.float32)
    return torch.from_numpy(res).to(mid.device) if is_torch else res
