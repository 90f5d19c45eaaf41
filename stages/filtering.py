"""Filtering (stage 2, run_cnn.py): train the gender / quality / age / glasses CNNs on the hand-labelled images
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
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from cnn.filter_cnns import arch_info, count_parameters, to_unit_float
from cnn.kfold import FoldSettings, load_model, model_path
from pipeline import lineage
from pipeline.config import ConfigError, Resolved, resolve, write_run_config
from pipeline.io import NUMBERED_PNG_RE, atomic_write_bytes, atomic_write_text, remove_stale_tmp, remove_unlisted
from pipeline.profiles import load_profile
from pipeline.runtime import Timer, apply_threads, check_run_manifest, peak_rss_mb
from pipeline.vocabulary import FILTER_PROPERTIES as PROPERTIES
from synthface.truth import truth_for_images
from training.filter_cnns import train_property

from .filtering_inputs import LABEL_GROUPS, Inputs, load_inputs, read_image
from .filtering_report import COLUMN_ORDER, attempt_seeds, fold_table, truth_metrics, write_stage_report

RUN_ORDER = ("quality", "gender", "age", "glass")          # training / inference order (quality first, as the original)
IMAGE_RE = NUMBERED_PNG_RE
PER_PROPERTY_KEYS = ("split", "batch_size", "valid_batch_size", "patience", "max_epochs", "t_max", "max_attempts",
                     "weight_decay", "width", "padding", "init", "pretrained", "lr", "threshold", "cut")
# the filter (02 §1.4): keep an image when every condition holds; setting -> (property, comparison)
FILTER_KEYS = {"gender_min": ("gender", ">="), "quality_min": ("quality", ">="), "age_max": ("age", "<="),
               "glass_max": ("glass", "<=")}


@dataclass
class FilteringRun:
    """What the stage needs of the profile, as plain values (read once at the top)."""
    profile_name: str
    resolution: int
    data_root: Path
    world_seed: int | None           # None: no world, no truth metrics
    note: str = ""


def filter_rules(values: dict) -> dict:
    """``{property: (">=" | "<=", threshold)}`` from the settings ``gender_min`` … ``glass_max``."""
    rules = {}
    for key, (prop, op) in FILTER_KEYS.items():
        thr = float(values[key])
        if not 0.0 <= thr <= 1.0:
            raise ConfigError(f"{key} must be in [0, 1], got {thr}")
        rules[prop] = (op, thr)
    return rules


def _pp(value, prop: str, key: str):
    if isinstance(value, dict):
        if prop not in value:
            raise ConfigError(f"stage-2 setting {key} has no entry for {prop!r} (it has {sorted(value)})")
        return value[prop]
    return value


def fold_settings(values: dict, prop: str, resolution: int) -> FoldSettings:
    """The training settings of ``prop`` from the resolved stage-2 settings (per-property dicts or one value)."""
    kw = {k: _pp(values[k], prop, k) for k in PER_PROPERTY_KEYS}
    if isinstance(kw["width"], list):
        kw["width"] = tuple(kw["width"])
    kw["pretrained"] = kw["pretrained"] or None               # "" = train from the init
    kw["max_epochs"] = kw["max_epochs"] or None               # 0 = no cap (early stopping only)
    s = FoldSettings(prop=prop, resolution=int(resolution), folds=int(values["folds"]), seed=int(values["seed"]), **kw)
    try:
        s.validate()
    except ValueError as exc:                                # a setting out of range: the user's to fix
        raise ConfigError(f"stage-2 settings: {exc}") from exc
    arch_info(prop, s.resolution, s.width, s.padding)        # crop too small -> clear error now
    return s


def main(consts: dict, profile_name: str, flags, stage1: str | None = None, out: str | None = None,
         show_progress: bool = True) -> dict:
    """The script's entry: constants, then the profile's ``stage2`` preset, then flags; then plain values."""
    profile = load_profile(profile_name)
    cfg = resolve(consts, profile, "stage2", flags)
    values = dict(cfg.values)
    apply_threads(int(values["threads"]))
    values["pretrained"] = {p: (str(profile.path(v)) if v else "") for p, v in values["pretrained"].items()}
    run = FilteringRun(profile.name, int(profile["resolution"]), profile.data_root,
                       int(profile["world_seed"]) if "world_seed" in profile else None,
                       str(profile.get("stage2", {}).get("note", "")))
    m = run_filtering(run, values, stage1_dir=Path(stage1) if stage1 else profile.stage_dir("stage1"),
                      out_dir=Path(out) if out else profile.stage_dir("stage2"), show_progress=show_progress,
                      sources={k: v for k, v in cfg.sources.items() if v != "constant"})
    c = m["counts"]
    print(f"stage 2: {c['scored']} images scored, {c['kept']} kept ({c['kept_share_of_scored']:.1%}), "
          f"{m['timings']['total_s']:.1f} s")
    if m.get("truth"):
        t = m["truth"]
        parts = [f"{p} acc {t[p]['accuracy_at_0.5']:.4f}" for p in ("gender", "age", "glass") if p in t]
        if "quality" in t:
            parts.append(f"defect recall {t['quality']['defect_recall_at_filter']:.4f} / good precision "
                         f"{t['quality']['good_precision_at_filter']:.4f}")
        if t["kept"]["purity_concept"] is not None:
            parts.append(f"kept purity {t['kept']['purity_concept']:.4f}")
        print("against truth: " + ", ".join(parts))
    return m


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


def truth_table(run: FilteringRun, stage1_dir: Path, img_nos: np.ndarray) -> pd.DataFrame | None:
    """Ground truth of each image (profiles with a world and a stage-1 ``latents.csv``)."""
    latents = Path(stage1_dir) / "latents.csv"
    if run.world_seed is None or not latents.is_file():
        return None
    t = truth_for_images(latents, img_nos, run.world_seed)[["female", "quality_defect", "old", "glasses", "concept"]]
    t.index = img_nos
    return t


def check_properties(properties) -> tuple:
    props = tuple(properties)
    if not props or len(set(props)) != len(props) or any(p not in PROPERTIES for p in props):
        raise ConfigError(f"properties must be distinct names out of {', '.join(PROPERTIES)}, got {props}")
    return props


def label_paths(values: dict, data_root: Path) -> dict:
    """``{group: path}`` of the hand-label files (relative paths are under the data root)."""
    return {g: (Path(f) if Path(f).is_absolute() else Path(data_root) / f) for g, f in values["label_files"].items()}


def run_filtering(run: FilteringRun, values: dict, stage1_dir: Path, out_dir: Path, show_progress: bool = True,
                  sources: dict | None = None) -> dict:
    """Stage 2 on plain settings (``values``: the resolved settings of run_cnn.py) and paths."""
    props = check_properties(values["properties"])
    t_start = time.perf_counter()
    props_run = [p for p in RUN_ORDER if p in props]
    props_col = [p for p in COLUMN_ORDER if p in props]
    rules = {p: r for p, r in filter_rules(values).items() if p in props}
    stage1_dir, out_dir = Path(stage1_dir), Path(out_dir)
    res = int(run.resolution)
    fsets = {p: fold_settings(values, p, res) for p in props_run}
    score_bs = int(values["score_batch_size"])
    if score_bs < 1:
        raise ConfigError(f"score batch size must be >= 1, got {score_bs}")
    cnn_dir = out_dir / "cnn"
    model_dir, log_dir, inf_dir = cnn_dir / "models", cnn_dir / "log", cnn_dir / "inference_result"
    timings = {}

    # 1. validate everything before writing anything
    with Timer() as t:
        inputs = load_inputs(label_paths(values, run.data_root), props, res, stage1_dir, show_progress)
        for p, s in fsets.items():
            for k in range(s.folds):
                if model_path(model_dir, p, k).is_file():
                    load_model(s, model_path(model_dir, p, k))
            man = model_dir / f"run_config_{p}.json"
            if man.is_file():
                check_run_manifest(man, _manifest(run.profile_name, s, inputs, p))     # compares only; raises on change
        # stage 1 complete and unchanged since it finished; work here made from another stage 1 is refused
        consumed = lineage.open_stage(
            out_dir, {"stage1": (stage1_dir, "run_original_generator.py (stage 1)")},
            files={f"labels {g}": f for g, f in inputs.label_files.items()},
            restart_hint="delete the stage-2 folder (or use another --out) and run run_cnn.py again")
    timings["validate_inputs_s"] = round(t.seconds, 3)

    # 2. train missing folds
    out_dir.mkdir(parents=True, exist_ok=True)
    write_run_config(out_dir / "run_config.json", Resolved(values, dict(sources or {})),
                     extra={"profile": run.profile_name})                # the settings of the last run
    for d in (out_dir, model_dir, log_dir, inf_dir):
        if d.is_dir():
            remove_stale_tmp(d)
    x_lab = to_tensor_nchw(inputs.labelled_images)
    training = {}
    for p in props_run:
        s = fsets[p]
        check_run_manifest(model_dir / f"run_config_{p}.json", _manifest(run.profile_name, s, inputs, p))
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

    data_root = run.data_root
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
    if values["copy_hand_labelled"]:
        keep_nos += inputs.labelled[keep_lab].tolist()
    with Timer() as t:
        copy_stats = sync_filtered(out_dir / "filtered", keep_nos, inputs.images)
    timings["filter_copy_s"] = round(t.seconds, 3)

    # 5. truth, metrics, report
    truth = truth_table(run, stage1_dir, inputs.unlabelled)
    tm = truth_metrics(scored, truth, rules, keep_scored) if truth is not None else None
    if tm is not None and values["copy_hand_labelled"]:
        t_all = truth_table(run, stage1_dir, np.array(sorted(keep_nos), dtype=np.int64))
        tm["kept_including_hand_labelled"] = {"count": len(keep_nos),
                                              "purity_concept": float(t_all["concept"].mean()) if len(keep_nos) else None}
    timings["total_s"] = round(time.perf_counter() - t_start, 3)

    folds = {p: fold_table(log_dir, p, fsets[p]) for p in props_run}
    metrics = {
        "stage": "2_cnn_filter", "profile": run.profile_name, "resolution": res,
        "threads": torch.get_num_threads(),
        "properties": props_run, "filter": {p: list(r) for p, r in rules.items()},
        "copy_hand_labelled": values["copy_hand_labelled"],
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
                  "attempt_seeds": {p: attempt_seeds(folds[p]) for p in props_run}},
        "training": {p: {"trained_folds_this_run": training[p]["trained_folds"], "folds": folds[p]} for p in props_run},
        "score_summary": {p: {"median": float(np.median(final[p])) if len(final[p]) else None,
                              "mean": float(np.mean(final[p])) if len(final[p]) else None} for p in props_run},
        "truth": tm,
        "timings": timings, "peak_rss_mb": round(peak_rss_mb(), 1),
        "outputs": {"models": "cnn/models/{prop}_model_{k}.pt", "logs": "cnn/log/",
                    "inference": "cnn/inference_result/{prop}.csv", "merged": f"cnn/{merged_name}",
                    "filtered": "filtered/NNNNNN.png"},
    }
    write_stage_report(out_dir, run.profile_name, run.note, metrics, props_run, props_col, log_dir, fsets, scored, rules,
                       truth, merged_name)
    lineage.close_stage(out_dir, consumed, metrics)          # lineage.json, then metrics.json (last)
    return metrics


def _manifest(profile_name: str, s: FoldSettings, inputs: Inputs, prop: str) -> dict:
    group = next(g for g, ps in LABEL_GROUPS.items() if prop in ps)
    return {"profile": profile_name, "property": prop, "settings": s.to_dict(),
            "labels_sha256": inputs.label_hash[group], "labelled_images": int(len(inputs.labelled))}


