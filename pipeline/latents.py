"""The one reader of stage 1's ``latents.csv`` (``img_no``, ``z_0`` … ``z_{d-1}``).

Every stage that needs z or the world's truth reads the file here, so that every reader applies
the same checks: the file exists, the columns are complete, the values are finite numbers, no
image appears twice and every requested image has a row. Errors name the file, row and column.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.io import InputError, atomic_write_csv


def _z_columns(path: Path, columns, z_dim: int | None) -> list[str]:
    if "img_no" not in columns:
        raise InputError(f"{path}, row 0 (header): no img_no column")
    found = [c for c in columns if c.startswith("z_")]
    d = z_dim if z_dim is not None else len(found)
    want = [f"z_{i}" for i in range(d)]
    missing = [c for c in want if c not in columns]
    if missing or d == 0:
        raise InputError(f"{path}, row 0 (header): missing column(s) {', '.join(missing[:3]) or 'z_0'}"
                         + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
                         + f" (expected z_0 … z_{max(d - 1, 0)})")
    extra = [c for c in found if c not in want]
    if extra:
        raise InputError(f"{path}, row 0 (header): unexpected column(s) {', '.join(extra[:3])} for z_dim {d}")
    return want


def read_latents(path: str | os.PathLike, img_nos=None, z_dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(img_nos int64 [N], z float32 [N, d])``, in the order of ``img_nos`` when given, else of the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} not found: run run_original_generator.py (stage 1) first")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable CSV ({exc})") from exc
    zcols = _z_columns(path, list(df.columns), z_dim)
    nos = pd.to_numeric(df["img_no"], errors="coerce")
    bad = np.flatnonzero(nos.isna().to_numpy() | (nos.to_numpy(dtype=float) % 1 != 0))
    if len(bad):
        raise InputError(f"{path}, row {bad[0] + 1}: img_no {df['img_no'].iloc[bad[0]]!r} is not an integer")
    nos = nos.to_numpy(np.int64)
    dup = pd.Index(nos).duplicated()
    if dup.any():
        r = int(np.flatnonzero(dup)[0])
        raise InputError(f"{path}, row {r + 1}: image {nos[r]:06d} appears twice")
    values = df[zcols].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    if img_nos is not None:
        pos = {int(n): i for i, n in enumerate(nos)}
        want = np.asarray(img_nos, dtype=np.int64)
        lost = [int(n) for n in want if int(n) not in pos]
        if lost:
            raise InputError(f"{path} has no row for image {lost[0]:06d}"
                             + (f" (and {len(lost) - 1} more)" if len(lost) > 1 else "")
                             + "; the stage-1 outputs and this stage's inputs do not belong together")
        rows = np.array([pos[int(n)] for n in want], dtype=np.int64)
        nos, values = want, values[rows]
    else:
        rows = np.arange(len(nos))
    if not np.isfinite(values).all():
        r, c = np.argwhere(~np.isfinite(values))[0]
        raise InputError(f"{path}, row {rows[r] + 1} (image {int(nos[r]):06d}), column {zcols[c]!r}: "
                         f"not a finite number ({df[zcols[c]].iloc[rows[r]]!r})")
    return nos, values.astype(np.float32)


# ------------------------------------------------------------------------------------ z files of stage 5

def write_z_csv(path: Path, z: np.ndarray) -> None:
    df = pd.DataFrame(np.asarray(z, np.float32), columns=[str(i) for i in range(z.shape[1])])
    atomic_write_csv(path, df)


def read_z_csv(path: Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"latent file {path} not found")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"latent file {path}: not a readable CSV ({exc})") from exc
    df = df[[c for c in df.columns if c != "z_idx"]]
    if df.empty or df.shape[1] == 0:
        raise InputError(f"latent file {path} holds no latent (expected one row per z, columns 0 … d-1)")
    vals = df.apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    if not np.isfinite(vals).all():
        r, c = np.argwhere(~np.isfinite(vals))[0]
        raise InputError(f"latent file {path}, row {r + 1}, column {df.columns[c]!r}: not a finite number "
                         f"({df.iat[r, c]!r})")
    return vals.astype(np.float32)
