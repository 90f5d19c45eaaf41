"""The kept set: the images stage 2 kept with their property labels (the training data of stage 5).

* :func:`load_kept_set`: the images of ``stage2/filtered/NNNNNN.png`` joined **by image number**
  with a score CSV (``stage4/all_scores.csv`` for v1, the property CNN's
  ``stage5/property_cnn/all_scores_v2_cnn.csv`` for v3 / v4, or any file in that format:
  ``img_no`` plus ``{p}_score`` columns; a leading pandas index is ignored). Every image must
  have a row; missing columns, rows or non-finite values are errors naming the file, row and
  column. Labels are float32.
* :func:`kept_latents`: the stage-1 latents of the kept images (``stage1/latents.csv``).

The networks that judge or steer the training (gender CNN, property CNN, evaluator) are loaded
by :mod:`evaluation.networks`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pipeline.io import InputError, numbered_pngs, read_checked_png
from pipeline.latents import read_latents


class KeptSetError(InputError):
    """A kept-set input is missing or malformed (the message names the file, row and column)."""


@dataclass
class KeptSet:
    """Images (uint8 NCHW, in memory) and labels (float32 [N, L]) of the kept set, sorted by img_no."""
    img_nos: np.ndarray
    paths: list
    images: torch.Tensor
    labels: np.ndarray
    label_names: tuple
    label_file: Path

    def __len__(self) -> int:
        return len(self.img_nos)

    def batch(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """(images in [-1, 1] float32 [b, 3, R, R], labels float32 [b, L]) for indices ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        x = self.images[torch.from_numpy(idx)].to(torch.float32).div(127.5).sub(1.0)
        return x, torch.from_numpy(self.labels[idx])


def list_filtered(stage2_dir: Path, error: type[Exception] | None = None) -> tuple[np.ndarray, list]:
    """Image numbers and paths of stage 2's filtered images; a missing or empty folder raises ``error``."""
    error = error or KeptSetError
    filt = Path(stage2_dir) / "filtered"
    if not filt.is_dir():
        raise error(f"stage-2 folder {filt} not found; run run_cnn.py first (it writes the filtered images)")
    nos = numbered_pngs(filt)
    if not nos:
        raise error(f"{filt} holds no NNNNNN.png image")
    return np.array(nos, dtype=np.int64), [filt / f"{n:06d}.png" for n in nos]


def _more(lost: list) -> str:
    """" (and N more kept images)" when more than one image is missing, else nothing."""
    n = len(lost) - 1
    return f" (and {n} more kept image{'s' if n > 1 else ''})" if n > 0 else ""


def read_score_csv(path: Path, label_names, img_nos: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(img_nos, labels float32 [N, L]) from a score CSV; with ``img_nos`` the rows are those images, in that order.

    Rows are numbered from 1 (the first data row, file line 2)."""
    path = Path(path)
    cols = [f"{p}_score" for p in label_names]
    if not path.is_file():
        raise KeptSetError(f"score file {path} not found (expected columns img_no, {', '.join(cols)})")
    try:
        df = pd.read_csv(path)
    except Exception as exc:
        raise KeptSetError(f"score file {path}, row 0 (header): cannot be parsed as CSV ({exc})") from exc
    missing = [c for c in ["img_no"] + cols if c not in df.columns]
    if missing:
        raise KeptSetError(f"score file {path}, row 0 (header): missing column(s) {', '.join(missing)}")
    nos = pd.to_numeric(df["img_no"], errors="coerce").to_numpy()
    bad = np.flatnonzero(~np.isfinite(nos) | (nos != np.round(nos)))
    if len(bad):
        raise KeptSetError(f"score file {path}, row {bad[0] + 1}, column 'img_no': {df['img_no'].iat[bad[0]]!r} "
                               f"is not an image number")
    nos = nos.astype(np.int64)
    dup = pd.Series(nos).duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise KeptSetError(f"score file {path}, row {i + 1}, column 'img_no': image {nos[i]} appears twice")
    vals = np.empty((len(df), len(cols)), np.float64)
    for j, c in enumerate(cols):
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(~np.isfinite(v))
        if len(bad):
            raise KeptSetError(f"score file {path}, row {bad[0] + 1}, column '{c}': {df[c].iat[bad[0]]!r} is not "
                                   f"a finite number")
        vals[:, j] = v
    if img_nos is None:
        order = np.argsort(nos, kind="stable")
        return nos[order], vals[order].astype(np.float32)
    pos = {int(n): i for i, n in enumerate(nos)}
    lost = [int(n) for n in img_nos if int(n) not in pos]
    if lost:
        raise KeptSetError(f"score file {path} has no row for image {lost[0]:06d}{_more(lost)}; "
                           f"it does not belong to this kept set")
    rows = np.array([pos[int(n)] for n in img_nos], dtype=np.int64)
    return np.asarray(img_nos, dtype=np.int64), vals[rows].astype(np.float32)


def load_images(paths, resolution: int, show_progress: bool = False) -> torch.Tensor:
    """uint8 NCHW tensor of the images (each checked)."""
    out = torch.empty((len(paths), 3, resolution, resolution), dtype=torch.uint8)
    for i, p in enumerate(tqdm(paths, desc="reading images", unit="img", disable=not show_progress)):
        out[i] = torch.from_numpy(read_image(p, resolution)).permute(2, 0, 1)
    return out


def read_image(path: Path, resolution: int) -> np.ndarray:
    """One kept image as uint8 [R, R, 3]; a missing, corrupt or wrongly sized file is an error naming it."""
    return read_checked_png(path, resolution, KeptSetError)


def load_kept_set(stage2_dir: Path, label_file: Path, label_names, resolution: int,
                  show_progress: bool = False) -> KeptSet:
    """The kept images of ``stage2_dir/filtered/`` joined by image number with ``label_file``'s labels."""
    nos, paths = list_filtered(stage2_dir)
    _, labels = read_score_csv(label_file, label_names, nos)
    images = load_images(paths, int(resolution), show_progress)
    return KeptSet(nos, paths, images, labels, tuple(label_names), Path(label_file))


def kept_latents(latents_csv: Path, img_nos, z_dim: int) -> np.ndarray:
    """Stage-1 latents z [N, z_dim] (float32) of the given images, joined by img_no (:func:`read_latents`)."""
    return read_latents(latents_csv, img_nos, z_dim)[1]
