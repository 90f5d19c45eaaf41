"""Stage 2: train the gender / quality / age / glasses CNNs on the hand-labelled images
(K-fold), score every other image with the mean of the fold models, merge, filter.

Inputs (stage 1 folder, default ``<data root>/stage1``):

* ``latents.csv``: the images stage 1 made (``img_no``; written when stage 1 completes). On
  profiles with a ``world_seed`` its z columns give the ground truth for the report;
* ``images/NNNNNN.png``: the generated images (the image number is the file name);
* the hand-label files (profile ``stage2.label_files``, relative to the data root):
  ``synthesize_results_quality_and_gender.csv`` (``img_name, quality, gender``) and
  ``synthesize_results_age_and_glass.csv`` (``img_name, age, glass``); ``img_name`` is the
  integer image number, labels are 0/1 (quality 1 = good, gender 1 = female, age 1 = old,
  glass 1 = glasses). Both files must label the same images.

Every input is validated before anything is written: a missing or malformed label file
(wrong columns, non-numeric value, label not 0/1, duplicate or unknown ``img_name``, the
two files labelling different images) is a :class:`LabelFileError` naming the file, row
and column; a missing, unreadable or wrongly sized image is an error naming the file.

Outputs (``<data root>/stage2``):

* ``cnn/models/{prop}_model_{k}.pt`` (plain state_dicts; a re-run loads them strictly and
  trains only missing folds), ``cnn/models/run_config_{prop}.json`` (training settings and
  the label file's hash: changing either with models present is refused);
* ``cnn/log/train_log_{prop}.csv``, ``epoch_detail_{prop}_{k}.csv``, ``train_loss_{prop}_{k}.csv``;
* ``cnn/inference_result/{prop}.csv``: ``img_no, img_path, property_{prop}_final_score,
  score_model_0 … score_model_{K-1}`` for every unlabelled image (4 decimals);
* ``cnn/all_image_quality_and_gender_and_age_and_glass.csv`` (pandas index first):
  ``img_no, img_path, gender_score, quality_score, age_score, glass_score`` for every image;
  hand-labelled rows carry their labels. (With only gender and quality selected the file is
  the original's ``all_image_quality_and_gender.csv``.) ``img_path`` is relative to the
  data root; rows are sorted by ``img_no``;
* ``filtered/NNNNNN.png``: copies of the images that pass the filter (by default only
  CNN-scored images: the v9 rule; ``copy_hand_labelled`` applies the rule to the labels too);
* ``metrics.json``, ``report.md``, ``report/*.png``.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pipeline.io import (NUMBERED_PNG_RE, atomic_write_bytes, atomic_write_text, read_png_rgb, remove_stale_tmp,
                         remove_unlisted, sha256_file)
from pipeline.reports import markdown_table, save_figure, write_metrics, write_report
from pipeline.runtime import Timer, check_run_manifest, peak_rss_mb

from .filter_cnns import MEANING, PROPERTIES, arch_info, count_parameters, to_unit_float
from .kfold import (DETAIL_COLUMNS, FoldSettings, derive_seed, load_model, model_path, read_train_log,
                    train_property)

QG_FILE = "synthesize_results_quality_and_gender.csv"
AG_FILE = "synthesize_results_age_and_glass.csv"
LABEL_GROUPS = {"quality_and_gender": ("quality", "gender"), "age_and_glass": ("age", "glass")}
DEFAULT_LABEL_FILES = {"quality_and_gender": f"stage1/{QG_FILE}", "age_and_glass": f"stage1/{AG_FILE}"}
RUN_ORDER = ("quality", "gender", "age", "glass")          # training / inference order (quality first, as the original)
COLUMN_ORDER = ("gender", "quality", "age", "glass")       # merged-CSV column order
IMAGE_RE = NUMBERED_PNG_RE

# the spec's values (02 §1.4, 01 §2.4); a profile's "stage2" block overrides any of them, and
# every entry may be one value or a {property: value} mapping
SPEC_DEFAULTS = {
    "folds": 5, "split": "stratified", "batch_size": 16, "valid_batch_size": 4, "score_batch_size": 4,
    "patience": 20, "max_epochs": None, "t_max": 10, "max_attempts": 5, "seed": 0, "weight_decay": 0.01,
    "width": 1.0, "padding": 0, "init": "pytorch", "pretrained": None,
    "lr": {"gender": 5e-6, "quality": 5e-6, "age": 2.5e-5, "glass": 5e-5},
    "threshold": {"gender": 0.35, "quality": 0.13, "age": 0.23, "glass": 0.10},
    "cut": {"gender": 0.5, "quality": 0.9, "age": 0.1, "glass": 0.1},
}
PER_PROPERTY_KEYS = ("split", "batch_size", "valid_batch_size", "patience", "max_epochs", "t_max", "max_attempts",
                     "weight_decay", "width", "padding", "init", "pretrained", "lr", "threshold", "cut")


class LabelFileError(ValueError):
    """A hand-label file is missing or malformed (the message names file, row and column)."""


class ImageError(ValueError):
    """A stage-1 image is missing, unreadable or has the wrong size (the message names the file)."""


# the v9 filter (02 §1.4): keep an image when every condition holds
DEFAULT_FILTER = {"gender": (">=", 0.92), "quality": (">=", 0.9), "age": ("<=", 0.008), "glass": ("<=", 0.01)}
FILTER_KEYS = {"gender_min": "gender", "quality_min": "quality", "age_max": "age", "glass_max": "glass"}


def filter_rules(profile, **overrides) -> dict:
    """The filter rules: a non-None override (``gender_min``, ``quality_min``, ``age_max``,
    ``glass_max``) wins over the profile's ``stage2.filter`` value, which wins over the spec's."""
    block = {k: v for k, v in (profile.get("stage2", {}).get("filter") or {}).items() if k != "note"}
    unknown = sorted(set(block) - set(FILTER_KEYS)) + sorted(set(overrides) - set(FILTER_KEYS))
    if unknown:
        raise ValueError(f"unknown filter keys {unknown}; expected {sorted(FILTER_KEYS)}")
    rules = {}
    for key, prop in FILTER_KEYS.items():
        op, thr = DEFAULT_FILTER[prop]
        if overrides.get(key) is not None:
            thr = overrides[key]
        elif key in block:
            thr = block[key]
        rules[prop] = (op, float(thr))
    return rules


@dataclass
class Stage2Settings:
    properties: tuple = PROPERTIES
    filter: dict = field(default_factory=lambda: dict(DEFAULT_FILTER))   # prop -> (">=" | "<=", threshold)
    copy_hand_labelled: bool = False         # False: the v9 rule (hand-labelled images are never copied)
    seed: int | None = None                  # None: the profile's stage2.seed
    label_files: dict | None = None          # None: the profile's stage2.label_files (relative to the data root)
    score_batch_size: int | None = None      # None: the profile's

    def validate(self) -> None:
        props = tuple(self.properties)
        if not props or len(set(props)) != len(props) or any(p not in PROPERTIES for p in props):
            raise ValueError(f"properties must be distinct names out of {', '.join(PROPERTIES)}, got {props}")
        for p, rule in self.filter.items():
            if p not in PROPERTIES:
                raise ValueError(f"filter names an unknown property {p!r}")
            if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and rule[0] in (">=", "<=")):
                raise ValueError(f"filter rule for {p} must be ('>=' or '<=', threshold), got {rule!r}")
            if not 0.0 <= float(rule[1]) <= 1.0:
                raise ValueError(f"filter threshold for {p} must be in [0, 1], got {rule[1]}")


def _pp(value, prop: str, key: str):
    if isinstance(value, dict):
        if key == "pretrained":                   # optional per property
            return value.get(prop)
        if prop not in value:
            raise ValueError(f"profile stage2.{key} has no entry for {prop!r} (it has {sorted(value)})")
        return value[prop]
    return value


def fold_settings(profile, prop: str, seed: int | None = None) -> FoldSettings:
    """The training settings of ``prop``: the spec's values overridden by the profile's ``stage2`` block."""
    cfg = {**SPEC_DEFAULTS, **profile.get("stage2", {})}
    kw = {k: _pp(cfg[k], prop, k) for k in PER_PROPERTY_KEYS}
    if isinstance(kw["width"], list):
        kw["width"] = tuple(kw["width"])
    if kw["pretrained"]:
        kw["pretrained"] = str(profile.path(kw["pretrained"]))
    s = FoldSettings(prop=prop, resolution=int(profile["resolution"]), folds=int(cfg["folds"]),
                     seed=int(cfg["seed"] if seed is None else seed), **kw)
    s.validate()
    arch_info(prop, s.resolution, s.width, s.padding)        # crop too small -> clear error now
    return s


# ------------------------------------------------------------------------------------ inputs

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
    try:
        nos = pd.read_csv(latents, usecols=["img_no"])["img_no"].to_numpy()
    except (ValueError, pd.errors.ParserError) as exc:
        raise ImageError(f"{latents} has no readable img_no column ({exc})") from exc
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
    try:
        img = read_png_rgb(path)
    except OSError as exc:
        raise ImageError(f"image file {path} cannot be read (missing or corrupt)") from exc
    if img.dtype != np.uint8 or img.shape != (resolution, resolution, 3):
        raise ImageError(f"image file {path} has shape {img.shape} ({img.dtype}); expected "
                         f"({resolution}, {resolution}, 3) uint8 RGB for this profile")
    return img


@dataclass
class Inputs:
    images: dict                      # img_no -> path
    labels: pd.DataFrame              # img_name + one column per selected property
    label_files: dict                 # group -> path
    label_hash: dict                  # group -> sha256
    labelled: np.ndarray              # img_nos with labels (sorted)
    unlabelled: np.ndarray            # img_nos to score (sorted)
    labelled_images: np.ndarray       # uint8 [n, R, R, 3] in ``labelled`` order


def load_inputs(profile, settings: Stage2Settings, stage1_dir: Path, show_progress: bool = True) -> Inputs:
    """Validate every input; nothing is written here."""
    cfg_files = {**DEFAULT_LABEL_FILES, **profile.get("stage2", {}).get("label_files", {}),
                 **(settings.label_files or {})}
    groups = [g for g, props in LABEL_GROUPS.items() if any(p in settings.properties for p in props)]
    frames, files, hashes = {}, {}, {}
    for g in groups:
        p = Path(cfg_files[g])
        path = p if p.is_absolute() else profile.data_root / p
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
    labels = labels[["img_name"] + [p for p in PROPERTIES if p in settings.properties]]
    labelled = labels["img_name"].to_numpy(np.int64)
    lab_set = set(labelled.tolist())
    unlabelled = np.array([n for n in images if n not in lab_set], dtype=np.int64)
    res = int(profile["resolution"])
    lab_imgs = np.empty((len(labelled), res, res, 3), np.uint8)
    pos = {int(n): i for i, n in enumerate(labelled)}
    for n, path in tqdm(images.items(), desc="stage 2: checking images", unit="img", disable=not show_progress):
        img = read_image(path, res)
        if n in lab_set:
            lab_imgs[pos[n]] = img
    return Inputs(images, labels, files, hashes, labelled, unlabelled, lab_imgs)


# ------------------------------------------------------------------------------------ scoring

def to_tensor_nchw(imgs_nhwc: np.ndarray) -> torch.Tensor:
    """uint8 NHWC numpy -> uint8 NCHW tensor view (channels-last memory, no copy)."""
    return torch.from_numpy(imgs_nhwc).permute(0, 3, 1, 2)


def score_images(models: dict, images: dict, img_nos: np.ndarray, resolution: int, batch_size: int,
                 show_progress: bool = True) -> dict:
    """Per property: float32 [n, K] sigmoid outputs of every fold model (eval mode, inference_mode).

    Images are read in fixed batches of ``batch_size`` consecutive numbers, so the result does not
    depend on anything but the models and the images.
    """
    out = {p: np.zeros((len(img_nos), len(ms)), np.float32) for p, ms in models.items()}
    for ms in models.values():
        for m in ms:
            m.eval()
    with torch.inference_mode():
        for i in tqdm(range(0, len(img_nos), batch_size), desc="stage 2: scoring", unit="batch",
                      disable=not show_progress):
            nos = img_nos[i:i + batch_size]
            x = to_tensor_nchw(np.stack([read_image(images[int(n)], resolution) for n in nos]))
            for p, ms in models.items():
                xc = to_unit_float(ms[0].crop_input(x)).contiguous(memory_format=torch.channels_last)
                for k, m in enumerate(ms):
                    out[p][i:i + len(nos), k] = m.forward_cropped(xc).numpy()
    return out


def write_csv(path: Path, df: pd.DataFrame, index: bool = False) -> None:
    """Atomic CSV; floats as Python's shortest round-trip repr (0.5085, 1.0)."""
    atomic_write_text(path, df.to_csv(index=index, lineterminator="\n"))


def merged_csv_name(props) -> str:
    return "all_image_" + "_and_".join(p for p in RUN_ORDER if p in props) + ".csv"


def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def apply_filter(df: pd.DataFrame, rules: dict) -> tuple[np.ndarray, dict]:
    """Boolean mask of rows passing every rule, and per-condition / cumulative pass counts."""
    keep = np.ones(len(df), bool)
    each, cumulative = {}, {}
    for p, (op, thr) in rules.items():
        col = df[f"{p}_score"].to_numpy()
        ok = col >= thr if op == ">=" else col <= thr
        each[p] = int(ok.sum())
        keep &= ok
        cumulative[p] = int(keep.sum())
    return keep, {"each": each, "cumulative": cumulative, "all": int(keep.sum()), "of": int(len(df))}


def sync_filtered(dst_dir: Path, keep_nos: list[int], images: dict) -> dict:
    """Make ``dst_dir`` hold exactly copies of ``keep_nos`` (atomic copies; identical files are skipped)."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(dst_dir)
    keep = set(int(n) for n in keep_nos)
    removed = remove_unlisted(dst_dir, IMAGE_RE, keep)
    copied = skipped = 0
    for n in sorted(keep):
        src, dst = images[n], dst_dir / f"{n:06d}.png"
        data = src.read_bytes()
        if dst.is_file() and dst.stat().st_size == len(data) and dst.read_bytes() == data:
            skipped += 1
            continue
        atomic_write_bytes(dst, data)
        copied += 1
    return {"copied": copied, "skipped_identical": skipped, "removed_stale": removed}


# ------------------------------------------------------------------------------------ truth (synthface)

def truth_table(profile, stage1_dir: Path, img_nos: np.ndarray) -> pd.DataFrame | None:
    """Ground truth of each image (profiles with a ``world_seed`` and a stage-1 ``latents.csv``)."""
    latents = Path(stage1_dir) / "latents.csv"
    if "world_seed" not in profile or not latents.is_file():
        return None
    from synthface.world import WorldMap
    df = pd.read_csv(latents).set_index("img_no")
    zcols = [c for c in df.columns if c.startswith("z_")]
    z = df.loc[img_nos, zcols].to_numpy(np.float32)
    world = WorldMap(z_dim=len(zcols), seed=int(profile["world_seed"]))
    t = world.truth(z)[["female", "quality_defect", "old", "glasses", "concept"]]
    t.index = img_nos
    return t


TRUTH_POSITIVE = {"gender": ("female", 1), "quality": ("quality_defect", 0), "age": ("old", 1),
                  "glass": ("glasses", 1)}


def truth_metrics(scores: pd.DataFrame, truth: pd.DataFrame, rules: dict, kept: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score
    out = {"images": int(len(scores))}
    for p in [p for p in COLUMN_ORDER if f"{p}_score" in scores]:
        col, pos = TRUTH_POSITIVE[p]
        y = (truth[col].to_numpy() > 0.5) == bool(pos)          # True = the property's label 1
        s = scores[f"{p}_score"].to_numpy()
        d = {"truth_positive_share": float(y.mean()), "accuracy_at_0.5": float(((s >= 0.5) == y).mean())}
        if 0 < y.sum() < len(y):
            d["auroc"] = float(roc_auc_score(y, s))
        if p in rules:
            op, thr = rules[p]
            passed = s >= thr if op == ">=" else s <= thr
            want = y if op == ">=" else ~y                          # the side the filter keeps
            d["filter_rule"] = f"{op} {thr}"
            d["accuracy_at_filter"] = float((passed == want).mean())
            d["filter_precision"] = float(want[passed].mean()) if passed.any() else None
            d["filter_recall"] = float(passed[want].mean()) if want.any() else None
        out[p] = d
    if "quality_score" in scores:
        good = truth["quality_defect"].to_numpy() < 0.5
        s = scores["quality_score"].to_numpy()
        thr = rules.get("quality", (">=", 0.9))[1]
        called_good = s >= thr
        out["quality"]["defect_recall_at_filter"] = float((~called_good[~good]).mean()) if (~good).any() else None
        out["quality"]["good_precision_at_filter"] = (float(good[called_good].mean()) if called_good.any() else None)
    t_kept = truth[kept]
    out["kept"] = {"count": int(kept.sum()),
                   "purity_concept": float(t_kept["concept"].mean()) if kept.any() else None,
                   "female": float(t_kept["female"].mean()) if kept.any() else None,
                   "good_quality": float(1 - t_kept["quality_defect"].mean()) if kept.any() else None,
                   "young": float(1 - t_kept["old"].mean()) if kept.any() else None,
                   "no_glasses": float(1 - t_kept["glasses"].mean()) if kept.any() else None,
                   "concept_recall": float(kept[truth["concept"].to_numpy() > 0.5].mean())
                   if (truth["concept"] > 0.5).any() else None}
    return out


# ------------------------------------------------------------------------------------ report figures

def curves_figure(log_dir: Path, prop: str, folds: int, path: Path):
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for k in range(folds):
        det = log_dir / f"epoch_detail_{prop}_{k}.csv"
        if not det.is_file():
            continue
        d = pd.read_csv(det)
        line, = a1.plot(d["epoch"], d["val_loss"], label=f"fold {k} valid")
        tl = log_dir / f"train_loss_{prop}_{k}.csv"
        if tl.is_file():
            t = pd.read_csv(tl)
            a1.plot(t["epoch"], t["train_loss"], "--", color=line.get_color(), alpha=0.7)
        a2.plot(d["epoch"], pd.to_numeric(d["val_auroc"], errors="coerce"), color=line.get_color(), label=f"fold {k} AUROC")
        a2.plot(d["epoch"], d["val_accuracy"], ":", color=line.get_color())
    a1.set_title(f"{prop}: BCE (solid valid, dashed train)")
    a1.set_xlabel("epoch")
    a2.set_title(f"{prop}: valid AUROC (solid), accuracy (dotted)")
    a2.set_xlabel("epoch")
    a1.legend(fontsize=7)
    return save_figure(fig, path)


def histogram_figure(scores: pd.DataFrame, props, rules: dict, truth: pd.DataFrame | None, path: Path):
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(props), figsize=(3.6 * len(props), 3.2), squeeze=False)
    bins = np.linspace(0, 1, 51)
    for ax, p in zip(axes[0], props):
        s = scores[f"{p}_score"].to_numpy()
        if truth is not None:
            col, pos = TRUTH_POSITIVE[p]
            y = (truth[col].to_numpy() > 0.5) == bool(pos)
            ax.hist([s[~y], s[y]], bins=bins, stacked=True, label=["truth: no", "truth: yes"])
            ax.legend(fontsize=6)
        else:
            ax.hist(s, bins=bins)
        if p in rules:
            ax.axvline(rules[p][1], color="k", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_title(f"{p} score (1 = {MEANING[p]})", fontsize=9)
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------ the stage

def run_stage2(profile, settings: Stage2Settings | None = None, stage1_dir: Path | None = None,
               out_dir: Path | None = None, show_progress: bool = True) -> dict:
    settings = settings or Stage2Settings()
    settings.validate()
    t_start = time.perf_counter()
    props_run = [p for p in RUN_ORDER if p in settings.properties]
    props_col = [p for p in COLUMN_ORDER if p in settings.properties]
    rules = {p: (str(r[0]), float(r[1])) for p, r in settings.filter.items() if p in settings.properties}
    stage1_dir = Path(stage1_dir) if stage1_dir else profile.stage_dir("stage1")
    out_dir = Path(out_dir) if out_dir else profile.stage_dir("stage2")
    res = int(profile["resolution"])
    fsets = {p: fold_settings(profile, p, settings.seed) for p in props_run}
    score_bs = int(settings.score_batch_size or profile.get("stage2", {}).get("score_batch_size",
                                                                                SPEC_DEFAULTS["score_batch_size"]))
    if score_bs < 1:
        raise ValueError(f"score batch size must be >= 1, got {score_bs}")
    cnn_dir = out_dir / "cnn"
    model_dir, log_dir, inf_dir = cnn_dir / "models", cnn_dir / "log", cnn_dir / "inference_result"
    timings = {}

    # 1. validate everything before writing anything
    with Timer() as t:
        inputs = load_inputs(profile, settings, stage1_dir, show_progress)
        for p, s in fsets.items():
            for k in range(s.folds):
                if model_path(model_dir, p, k).is_file():
                    load_model(s, model_path(model_dir, p, k))
            man = model_dir / f"run_config_{p}.json"
            if man.is_file():
                check_run_manifest(man, _manifest(profile, s, inputs, p))     # compares only; raises on change
    timings["validate_inputs_s"] = round(t.seconds, 3)

    # 2. train missing folds
    out_dir.mkdir(parents=True, exist_ok=True)
    for d in (out_dir, model_dir, log_dir, inf_dir):
        if d.is_dir():
            remove_stale_tmp(d)
    x_lab = to_tensor_nchw(inputs.labelled_images)
    training = {}
    for p in props_run:
        s = fsets[p]
        check_run_manifest(model_dir / f"run_config_{p}.json", _manifest(profile, s, inputs, p))
        todo = [k for k in range(s.folds) if not model_path(model_dir, p, k).is_file()]
        total = len(todo) * s.max_epochs if s.max_epochs else None
        with tqdm(total=total, desc=f"stage 2: training {p} (folds {todo})", unit="epoch",
                  disable=not show_progress or not todo) as bar:
            def progress(msg, bar=bar):
                bar.update(1)
                bar.set_postfix_str(msg.split(" ", 1)[1])
            with Timer() as t:
                summary = train_property(s, x_lab, inputs.labels[p].to_numpy(), model_dir, log_dir, progress)
        training[p] = {**summary, "wall_s": round(t.seconds, 3)}
    timings["training_s"] = {p: training[p]["wall_s"] for p in props_run}

    # 3. score the unlabelled images with every fold model (strict loads)
    models = {p: [load_model(fsets[p], model_path(model_dir, p, k)) for k in range(fsets[p].folds)]
              for p in props_run}
    with Timer() as t:
        raw = score_images(models, inputs.images, inputs.unlabelled, res, score_bs, show_progress)
    timings["scoring_s"] = round(t.seconds, 3)
    timings["scoring_ms_per_image"] = round(1e3 * t.seconds / max(1, len(inputs.unlabelled)), 3)

    data_root = profile.data_root
    paths = [_rel(inputs.images[int(n)], data_root) for n in inputs.unlabelled]
    final = {}
    for p in props_run:
        final[p] = np.round(raw[p].astype(np.float64).mean(axis=1), 4)
        df = pd.DataFrame({"img_no": inputs.unlabelled, "img_path": paths, f"property_{p}_final_score": final[p]})
        for k in range(raw[p].shape[1]):
            df[f"score_model_{k}"] = np.round(raw[p][:, k].astype(np.float64), 4)
        write_csv(inf_dir / f"{p}.csv", df)

    # 4. merge (labels for the hand-labelled rows, fold means for the rest), filter, copy
    scored = pd.DataFrame({"img_no": inputs.unlabelled, "img_path": paths,
                           **{f"{p}_score": final[p] for p in props_col}})
    labelled = pd.DataFrame({"img_no": inputs.labelled,
                             "img_path": [_rel(inputs.images[int(n)], data_root) for n in inputs.labelled],
                             **{f"{p}_score": inputs.labels[p].to_numpy(np.float64) for p in props_col}})
    merged = pd.concat([labelled, scored], ignore_index=True).sort_values("img_no", kind="stable")
    merged = merged.reset_index(drop=True)
    merged_name = merged_csv_name(props_run)
    write_csv(cnn_dir / merged_name, merged, index=True)

    keep_scored, funnel = apply_filter(scored, rules)
    keep_lab, funnel_lab = apply_filter(labelled, rules)
    keep_nos = inputs.unlabelled[keep_scored].tolist()
    if settings.copy_hand_labelled:
        keep_nos += inputs.labelled[keep_lab].tolist()
    with Timer() as t:
        copy_stats = sync_filtered(out_dir / "filtered", keep_nos, inputs.images)
    timings["filter_copy_s"] = round(t.seconds, 3)

    # 5. truth, metrics, report
    truth = truth_table(profile, stage1_dir, inputs.unlabelled)
    tm = truth_metrics(scored, truth, rules, keep_scored) if truth is not None else None
    if tm is not None and settings.copy_hand_labelled:
        t_all = truth_table(profile, stage1_dir, np.array(sorted(keep_nos), dtype=np.int64))
        tm["kept_including_hand_labelled"] = {"count": len(keep_nos),
                                              "purity_concept": float(t_all["concept"].mean()) if len(keep_nos) else None}
    timings["total_s"] = round(time.perf_counter() - t_start, 3)

    folds = {p: _fold_table(log_dir, p, fsets[p]) for p in props_run}
    metrics = {
        "stage": "2_cnn_filter", "profile": profile.name, "resolution": res,
        "threads": torch.get_num_threads(),
        "properties": props_run, "filter": {p: list(r) for p, r in rules.items()},
        "copy_hand_labelled": settings.copy_hand_labelled,
        "counts": {"images": len(inputs.images), "hand_labelled": int(len(inputs.labelled)),
                   "scored": int(len(inputs.unlabelled)), "kept": len(keep_nos),
                   "kept_share_of_scored": round(funnel["all"] / max(1, funnel["of"]), 6)},
        "label_positives": {p: int(inputs.labels[p].sum()) for p in props_run},
        "label_files": {g: _rel(f, data_root) for g, f in inputs.label_files.items()},
        "label_sha256": inputs.label_hash,
        "funnel_scored": funnel, "funnel_hand_labelled": funnel_lab,
        "filtered_folder": copy_stats,
        "settings": {p: {**fsets[p].to_dict(), "params": count_parameters(models[p][0]),
                         "flatten": models[p][0].info.flatten, "crop": list(models[p][0].info.crop)}
                     for p in props_run},
        "score_batch_size": score_bs,
        "seeds": {"stage2_seed": next(iter(fsets.values())).seed, "fold_split_random_state": next(iter(fsets.values())).seed,
                  "attempt_seeds": {p: _attempt_seeds(folds[p]) for p in props_run}},
        "training": {p: {"trained_folds_this_run": training[p]["trained_folds"], "folds": folds[p]} for p in props_run},
        "score_summary": {p: {"median": float(np.median(final[p])) if len(final[p]) else None,
                              "mean": float(np.mean(final[p])) if len(final[p]) else None} for p in props_run},
        "truth": tm,
        "timings": timings, "peak_rss_mb": round(peak_rss_mb(), 1),
        "outputs": {"models": "cnn/models/{prop}_model_{k}.pt", "logs": "cnn/log/",
                    "inference": "cnn/inference_result/{prop}.csv", "merged": f"cnn/{merged_name}",
                    "filtered": "filtered/NNNNNN.png"},
    }
    write_metrics(out_dir, metrics)
    _write_report(out_dir, profile, metrics, props_run, props_col, log_dir, fsets, scored, rules,
                  truth, merged_name)
    return metrics


def _manifest(profile, s: FoldSettings, inputs: Inputs, prop: str) -> dict:
    group = next(g for g, ps in LABEL_GROUPS.items() if prop in ps)
    return {"profile": profile.name, "property": prop, "settings": s.to_dict(),
            "labels_sha256": inputs.label_hash[group], "labelled_images": int(len(inputs.labelled))}


def _fold_table(log_dir: Path, prop: str, s: FoldSettings) -> list[dict]:
    """Per fold: best-epoch validation metrics (epoch_detail) and attempts (train_log)."""
    log = read_train_log(log_dir / f"train_log_{prop}.csv")
    rows = []
    for k in range(s.folds):
        attempts = [r for r in log if int(r["fold_no"]) == k]
        det_path = log_dir / f"epoch_detail_{prop}_{k}.csv"
        row = {"fold": k, "attempts": len(attempts), "seed": None}
        if det_path.is_file():
            det = pd.read_csv(det_path, keep_default_na=False)
            i = int(np.argmin(det["val_loss"].to_numpy()))              # first minimum = the kept epoch
            best = det.iloc[i]
            row.update({"best_epoch": int(best["epoch"]), "total_epochs": len(det)})
            for c in DETAIL_COLUMNS[1:]:
                v = best[c]
                row[c] = None if v == "" else (int(v) if c in ("tp", "tn", "fp", "fn") else float(v))
        if attempts:
            row["elapsed_s"] = float(attempts[-1]["elapsed_time (s)"])
            row["success"] = str(attempts[-1]["success"]) == "True"
        row["seed"] = derive_seed(s.seed, prop, k, max(0, len(attempts) - 1))
        rows.append(row)
    return rows


def _attempt_seeds(rows: list[dict]) -> dict:
    return {str(r["fold"]): r["seed"] for r in rows}


def _f(v, nd=4):
    return "" if v is None or v == "" else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def _write_report(out_dir, profile, m, props_run, props_col, log_dir, fsets, scored, rules, truth, merged_name):
    rep = out_dir / "report"
    sections = []
    c = m["counts"]
    sections.append(("Summary", markdown_table(["item", "value"], [
        ["images", c["images"]], ["hand-labelled (training data)", c["hand_labelled"]],
        ["CNN-scored", c["scored"]],
        ["kept (copied to `filtered/`)", f"{c['kept']} ({c['kept_share_of_scored']:.1%} of the scored images)"],
        ["filter", " AND ".join(f"{p} {op} {thr}" for p, (op, thr) in rules.items())],
        ["hand-labelled images copied", "yes (rule applied to their labels)" if m["copy_hand_labelled"]
         else "no (v9 rule: only CNN-scored images are filtered)"],
        ["total time", f"{m['timings']['total_s']:.1f} s ({m['threads']} thread(s))"],
        ["training time", ", ".join(f"{p} {v:.1f} s" for p, v in m["timings"]["training_s"].items())],
        ["scoring time", f"{m['timings']['scoring_s']:.1f} s ({m['timings']['scoring_ms_per_image']} ms/image, "
                         f"{len(props_run)} properties x {fsets[props_run[0]].folds} folds)"],
        ["peak RSS", f"{m['peak_rss_mb']} MiB"],
    ])))
    fr = []
    for p in props_run:
        for r in m["training"][p]["folds"]:
            fr.append([p, r["fold"], r.get("attempts", ""), f"{r.get('best_epoch', '')} / {r.get('total_epochs', '')}",
                       _f(r.get("val_loss")), _f(r.get("val_accuracy")), _f(r.get("val_recall")),
                       _f(r.get("val_precision")), _f(r.get("val_f1_score")), _f(r.get("val_auroc")),
                       _f(r.get("elapsed_s"), 1)])
    note = ("Metrics at the best epoch (the kept weights) on the fold's validation images, at the cuts "
            + ", ".join(f"{p} {fsets[p].cut}" for p in props_run) + "; success thresholds (min valid BCE) "
            + ", ".join(f"{p} {fsets[p].threshold}" for p in props_run) + ". Epochs count from 0.")
    sections.append(("Per-fold validation", note + "\n\n" + markdown_table(
        ["CNN", "fold", "attempts", "best / total epochs", "val BCE", "acc", "recall", "precision", "F1", "AUROC",
         "time (s)"], fr)))
    s0 = fsets[props_run[0]]
    sections.append(("Training settings", markdown_table(
        ["CNN", "crop (r0, r1, c0, c1)", "width", "padding", "params", "lr", "batch", "max epochs", "patience",
         "init"],
        [[p, tuple(m["settings"][p]["crop"]), m["settings"][p]["width"], fsets[p].padding,
          f"{m['settings'][p]['params']:,}", fsets[p].lr, fsets[p].batch_size, fsets[p].max_epochs,
          fsets[p].patience, fsets[p].init] for p in props_run])
        + f"\n\n{s0.folds} folds ({s0.split}, random_state {s0.seed}); AdamW, CosineAnnealingLR(T_max {s0.t_max}); "
          f"BCE (sum); at most {s0.max_attempts} attempts per fold. Profile note: "
          + str(profile.get("stage2", {}).get("note", "(none)"))))
    curves = [curves_figure(log_dir, p, fsets[p].folds, rep / f"curves_{p}.png") for p in props_run]
    sections.append(("Training curves", "\n".join(f"![{p}](report/{c.name})" for p, c in zip(props_run, curves))))
    hist = histogram_figure(scored, props_col, rules, truth.loc[scored["img_no"]] if truth is not None else None,
                            rep / "score_histograms.png") if len(scored) else None
    if hist:
        sections.append(("Score histograms (CNN-scored images)", f"![histograms](report/{hist.name})\n\n"
                         "Dashed lines: filter thresholds; log counts."))
    f = m["funnel_scored"]
    rows = [[p, f"{rules[p][0]} {rules[p][1]}", f["each"][p], f["cumulative"][p]] for p in rules]
    rows.append(["all", "", f["all"], f["all"]])
    fl = m["funnel_hand_labelled"]
    sections.append(("Filter funnel", f"Of the {f['of']} CNN-scored images (cumulative = passing this and every "
                     "condition above):\n\n" + markdown_table(["condition", "rule", "pass", "cumulative"], rows)
                     + f"\n\nHand-labelled images whose labels pass every condition: {fl['all']} of {fl['of']} "
                     + ("(copied)." if m["copy_hand_labelled"] else "(not copied: v9 rule).")))
    tm = m["truth"]
    if tm:
        tr = []
        for p in props_col:
            d = tm[p]
            tr.append([p, _f(d["accuracy_at_0.5"]), _f(d.get("auroc")), d.get("filter_rule", ""),
                       _f(d.get("accuracy_at_filter")), _f(d.get("filter_precision")), _f(d.get("filter_recall"))])
        k = tm["kept"]
        q = tm.get("quality", {})
        body = (f"Against the world's ground truth on the {tm['images']} CNN-scored images (positive = "
                + ", ".join(f"{p}: {MEANING[p]}" for p in props_col) + "):\n\n"
                + markdown_table(["CNN", "accuracy @0.5", "AUROC", "filter rule", "accuracy @rule",
                                  "precision of kept side", "recall of kept side"], tr))
        if "defect_recall_at_filter" in q:
            body += (f"\n\nQuality at the filter cut: defect recall {_f(q['defect_recall_at_filter'])}, "
                     f"precision of \"good\" {_f(q['good_precision_at_filter'])}.")
        if k["count"]:
            body += (f"\n\nKept set ({k['count']} images): truly concept (female, good, young, no glasses) "
                     f"{k['purity_concept']:.2%}; female {k['female']:.2%}, good {k['good_quality']:.2%}, "
                     f"young {k['young']:.2%}, no glasses {k['no_glasses']:.2%}. Share of the truly-concept "
                     f"scored images that were kept: {_f(k['concept_recall'])}.")
        sections.append(("Accuracy against truth", body))
    sections.append(("Files", "\n".join([
        "- `cnn/models/{prop}_model_{k}.pt`: fold models (state_dicts); `run_config_{prop}.json`: their settings",
        "- `cnn/log/train_log_{prop}.csv`, `epoch_detail_{prop}_{k}.csv`, `train_loss_{prop}_{k}.csv`",
        "- `cnn/inference_result/{prop}.csv`: per-image fold scores and their mean",
        f"- `cnn/{merged_name}`: every image, hand labels for the labelled rows",
        "- `filtered/NNNNNN.png`: the kept images"])))
    write_report(out_dir, f"Stage 2 — filter CNNs ({profile.name})", sections)
