"""Ways to damage a file, as a user, a full disk or a killed writer would. Each returns a short text."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline import lineage
from pipeline.io import atomic_write_png


def corrupt(p: Path) -> None:
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image" * 10)


def zero(p: Path) -> None:
    p.write_bytes(b"")


def truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def flip(p: Path) -> None:
    """One byte changed in the middle: same size, other content."""
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))


def wrong_size(p: Path, size: int = 16) -> None:
    atomic_write_png(p, np.zeros((size, size, 3), np.uint8))


def grey_map(p: Path, value: int = 13, size: int = 224) -> None:
    atomic_write_png(p, np.full((size, size), value, np.uint8))


def csv_edit(p: Path, fn, index: bool = False) -> None:
    """Apply ``fn`` to the CSV's frame (all cells as text) and write it back (a leading index kept)."""
    df = pd.read_csv(p, dtype=str, keep_default_na=False)
    df = fn(df)
    p.write_text(df.to_csv(index=False, lineterminator="\n"))


def cell(col: str, row: int, value: str):
    def fn(df):
        df.loc[row, col] = value
        return df
    return fn


def drop_col(col: str):
    return lambda df: df.drop(columns=[col])


def drop_row(row: int):
    return lambda df: df.drop(index=row).reset_index(drop=True)


def dup_row(row: int):
    return lambda df: pd.concat([df, df.iloc[[row]]], ignore_index=True)


def csv_cut(p: Path) -> None:
    """The file cut in the middle of a line (a killed writer without atomic rename)."""
    text = p.read_text()
    p.write_text(text[: len(text) // 2])


def json_edit(p: Path, fn) -> None:
    p.write_text(json.dumps(fn(json.loads(p.read_text()))))


def state_edit(p: Path, fn) -> None:
    """Load a state-dict checkpoint, change it with ``fn``, save it back."""
    state = torch.load(p, map_location="cpu", weights_only=True)
    torch.save(fn(dict(state)), p)


def first_key(state: dict, suffix: str = "weight") -> str:
    return next(k for k in state if k.endswith(suffix))


# ------------------------------------------------------------------------- state-dict damage
def nan_weight(state: dict) -> dict:
    """The first weight filled with NaN."""
    k = first_key(state)
    return {**state, k: torch.full_like(state[k], float("nan"))}


def wrong_shape(state: dict) -> dict:
    """The first weight one column wider."""
    k = first_key(state)
    return {**state, k: torch.zeros(*state[k].shape[:-1], state[k].shape[-1] + 1)}


def missing_key(state: dict) -> dict:
    """The first weight left out."""
    k = first_key(state)
    return {n: v for n, v in state.items() if n != k}


def resealed(fn, run: str):
    """``fn(root)`` damages a file of the finished run ``root / run``, which is then sealed again:
    a finished run whose file is bad (not one whose lineage is stale)."""
    def go(root: Path):
        fn(root)
        lineage.seal(root / run)
    return go
