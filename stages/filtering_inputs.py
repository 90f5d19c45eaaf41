"""Filtering (stage 2) inputs: the hand-label files, stage 1's image list and its images.

Every input is validated before anything is written: a missing or malformed label file
(wrong columns, non-numeric value, label not 0/1, duplicate or unknown ``img_name``, the
two files labelling different images) is a :class:`LabelFileError` naming the file, row
and column; a missing, unreadable or wrongly sized image is an :class:`ImageError` naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.io import InputError, read_checked_png, sha256_file
from pipeline.latents import read_latents
from pipeline.vocabulary import FILTER_PROPERTIES as PROPERTIES

from synthface.hand_labels import AG_FILE, QG_FILE

LABEL_GROUPS = {"quality_and_gender": ("quality", "gender"), "age_and_glass": ("age", "glass")}
# where the hand-label files live by default, relative to the data root (run_cnn.py's LABEL_FILES)
DEFAULT_LABEL_FILES = {"quality_and_gender": f"stage1/{QG_FILE}", "age_and_glass": f"stage1/{AG_FILE}"}


class LabelFileError(InputError):
    """A hand-label file is missing or malformed (the message names file, row and column)."""


class ImageError(InputError):
    """A stage-1 image is missing, unreadable or has the wrong size (the message names the file)."""


def read_label_file(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Validated hand labels: ``img_name`` (int >= 0, unique) plus 0/1 ``columns``; sorted by img_name.

    Rows are numbered from 1 (the first data row, file line 2); the header is row 0.
    """
    path = Path(path)
    want = ("img_name",) + tuple(columns)
    if not path.is_file():
        raise LabelFileError(f"label file {path} not found (expected columns {', '.join(want)})")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig")
    except Exception as exc:            # empty file, broken quoting, ...
        raise LabelFileError(f"label file {path}, row 0 (header): cannot be parsed as CSV ({exc})") from exc
    cols = [str(c).strip() for c in df.columns]
    missing = [c for c in want if c not in cols]
    unexpected = [c for c in cols if c not in want]
    if missing or unexpected or len(cols) != len(set(cols)):
        parts = []
        if missing:
            parts.append("missing column(s) " + ", ".join(repr(c) for c in missing))
        if unexpected:
            parts.append("unexpected column(s) " + ", ".join(repr(c) for c in unexpected))
        if len(cols) != len(set(cols)):
            parts.append("duplicate column names")
        raise LabelFileError(f"label file {path}, row 0 (header), column(s) {', '.join(missing + unexpected) or cols}: "
                             f"{'; '.join(parts)}; expected exactly {', '.join(want)}")
    df.columns = cols
    if len(df) == 0:
        raise LabelFileError(f"label file {path}: no data rows (row 1, column 'img_name' is missing)")
    out = {}
    for col in want:
        vals = np.empty(len(df), dtype=np.int64)
        for i, raw in enumerate(df[col].tolist()):
            text = str(raw).strip()
            where = f"label file {path}, row {i + 1} (line {i + 2}), column '{col}'"
            try:
                v = float(text)
            except ValueError:
                raise LabelFileError(f"{where}: {raw!r} is not a number") from None
            if not np.isfinite(v) or v != int(v):
                raise LabelFileError(f"{where}: {raw!r} is not an integer")
            v = int(v)
            if col == "img_name" and v < 0:
                raise LabelFileError(f"{where}: image number {v} is negative")
            if col != "img_name" and v not in (0, 1):
                raise LabelFileError(f"{where}: label {raw!r} is out of range (must be 0 or 1)")
            vals[i] = v
        out[col] = vals
    names = out["img_name"]
    seen: dict[int, int] = {}
    for i, n in enumerate(names.tolist()):
        if n in seen:
            raise LabelFileError(f"label file {path}, row {i + 1} (line {i + 2}), column 'img_name': image {n} "
                                 f"is labelled twice (first in row {seen[n] + 1})")
        seen[n] = i
    res = pd.DataFrame(out)
    res["_row"] = np.arange(1, len(res) + 1)
    return res.sort_values("img_name", kind="stable").reset_index(drop=True)


def discover_images(stage1_dir: Path) -> dict[int, Path]:
    """``{img_no: path}`` of every image stage 1 recorded in ``latents.csv`` (sorted; each file must exist).

    ``latents.csv`` is written when stage 1 completes, so its absence means an unfinished stage 1.
    Other files in the image folder are ignored.
    """
    image_dir = Path(stage1_dir) / "images"
    latents = Path(stage1_dir) / "latents.csv"
    if not latents.is_file():
        raise ImageError(f"stage 1 is not complete: {latents} not found; run run_original_generator.py "
                         f"(it writes latents.csv when every image exists)")
    nos, _ = read_latents(latents)     # the one checked reader: columns, numbers, finiteness, duplicates
    found = {}
    for n in sorted(int(v) for v in nos):
        path = image_dir / f"{n:06d}.png"
        if not path.is_file():
            raise ImageError(f"image file {path} is missing (listed in {latents}); re-run stage 1 to restore it")
        found[n] = path
    if not found:
        raise ImageError(f"{latents} lists no images")
    return found


def read_image(path: Path, resolution: int) -> np.ndarray:
    return read_checked_png(path, resolution, ImageError)


@dataclass
class Inputs:
    images: dict                      # img_no -> path
    labels: pd.DataFrame              # img_name + one column per selected property
    label_files: dict                 # group -> path
    label_hash: dict                  # group -> sha256
    labelled: np.ndarray              # img_nos with labels (sorted)
    unlabelled: np.ndarray            # img_nos to score (sorted)
    labelled_images: np.ndarray       # uint8 [n, R, R, 3] in ``labelled`` order


def load_inputs(label_files: dict, properties, resolution: int, stage1_dir: Path,
                show_progress: bool = True) -> Inputs:
    """Validate every input; nothing is written here. ``label_files``: group -> path."""
    groups = [g for g, props in LABEL_GROUPS.items() if any(p in properties for p in props)]
    frames, files, hashes = {}, {}, {}
    for g in groups:
        path = Path(label_files[g])
        frames[g] = read_label_file(path, LABEL_GROUPS[g])
        files[g], hashes[g] = path, sha256_file(path)
    images = discover_images(stage1_dir)
    first = groups[0]
    base = frames[first]
    for i, n in zip(base["_row"], base["img_name"]):
        if int(n) not in images:
            raise LabelFileError(f"label file {files[first]}, row {i} (line {i + 1}), column 'img_name': image {n} "
                                 f"has no file {Path(stage1_dir) / 'images' / f'{int(n):06d}.png'}")
    for g in groups[1:]:
        other = frames[g]
        a, b = set(base["img_name"].tolist()), set(other["img_name"].tolist())
        extra = other[~other["img_name"].isin(a)]
        if len(extra):
            i, n = int(extra["_row"].iloc[0]), int(extra["img_name"].iloc[0])
            raise LabelFileError(f"label file {files[g]}, row {i} (line {i + 1}), column 'img_name': image {n} is not "
                                 f"labelled in {files[first]} (both label files must list the same images)")
        lost = base[~base["img_name"].isin(b)]
        if len(lost):
            i, n = int(lost["_row"].iloc[0]), int(lost["img_name"].iloc[0])
            raise LabelFileError(f"label file {files[g]}, column 'img_name': image {n} (row {i} of {files[first]}) "
                                 f"has no row here (both label files must list the same images)")
    labels = base.drop(columns="_row")
    for g in groups[1:]:
        labels = labels.merge(frames[g].drop(columns="_row"), on="img_name", how="inner", validate="1:1")
    labels = labels[["img_name"] + [p for p in PROPERTIES if p in properties]]
    labelled = labels["img_name"].to_numpy(np.int64)
    lab_set = set(labelled.tolist())
    unlabelled = np.array([n for n in images if n not in lab_set], dtype=np.int64)
    res = int(resolution)
    lab_imgs = np.empty((len(labelled), res, res, 3), np.uint8)
    pos = {int(n): i for i, n in enumerate(labelled)}
    for n, path in tqdm(images.items(), desc="stage 2: checking images", unit="img", disable=not show_progress):
        img = read_image(path, res)
        if n in lab_set:
            lab_imgs[pos[n]] = img
    return Inputs(images, labels, files, hashes, labelled, unlabelled, lab_imgs)
