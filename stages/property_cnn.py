"""Stage 5a: train the property-score CNN on the stage-4 scores of the kept set, then relabel the set.

Inputs (joined by image number): the kept images ``stage2/filtered/NNNNNN.png`` and the 2nd-
algorithm scores ``stage4/all_scores_v2.csv`` (targets, P7 order). On world-backed profiles
also ``stage1/latents.csv`` (truth(z) of every image, for the report only).

Training (:func:`training.property_cnn.train_property_cnn`): a seeded 90 / 10 split, MSE on
all seven scores, AdamW, cosine schedule, validation in eval mode after every epoch, the
original's early-stopping rule (mean validation MSE without background_std; stop after
``patience`` epochs without a new best; keep the best epoch), optionally capped at
``max_epochs``. Resumable per epoch (``train_state.pth``); the finished checkpoint marks the
training as done, a re-run then only relabels and reports.

Outputs (``stage5/property_cnn/``):

* ``property_score_cnn.pth``: the best epoch's state dict (the original's file is
  ``stylegan_gen_fine_tuned_v2_cnn.pth``);
* ``train_log.csv`` / ``val_log.csv`` (the original's columns, one row per epoch / the first 30
  validation images per epoch);
* ``all_scores_v2_cnn.csv``: the CNN's scores of every kept image in the spec's format (no
  index; ``img_no, img_path``, the seven ``*_score`` columns in P7 order, 4 decimals, sorted by
  ``img_no``), computed in eval mode (``relabel_mode='train'``: with dropout on, seeded, as the
  original did — defect D7); these are the labels of FineTune-v3 / v4;
* ``compare/all_scores_v2_vs_cnn.csv``: ``img_no, img_path``, per property ``{p}_v2``,
  ``{p}_v2_cnn``, ``{p}_diff`` (joined by img_no);
* ``metrics.json`` (held-out r / MAE per property vs the stage-4 scores and, on synthface, vs
  truth(z); the same on the whole set; seeds, timings) and ``report.md``.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cnn.property_score_cnn import (P7, PropertyCNNSettings, count_parameters, load_property_cnn, score_images,
                                    to_signed_nchw)
from pipeline.io import atomic_write_text, remove_stale_tmp
from pipeline.vocabulary import SCORE_COLUMNS
from pipeline import lineage
from pipeline.config import ConfigError
from pipeline.reports import markdown_table, plt, save_figure, write_report
from pipeline.runtime import apply_threads, check_run_manifest, peak_rss_mb
from pipeline.shipped import ids_digest, install_record, install_run, shipped_dir
from synthface.truth import truth_for_images
from training.property_cnn import split_indices, train_property_cnn

from .bases import kept_set_of, restart_hint, upstream_records
from .settings import profile_of, profile_section, resolve_stage

OUT_SUBDIR = "stage5/property_cnn"
CHECKPOINT = "property_score_cnn.pth"
RELABEL_CSV = "all_scores_v2_cnn.csv"
TARGET_CSV = "stage4/all_scores_v2.csv"
# score -> the world parameter it measures (synthface truth), as stage 4
TRUTH_COLUMNS = {"eyes": "eyes_open", "mouth": "mouth_open", "pose": "pose", "hair_color": "hair_color",
                 "hair_length": "hair_length", "background_mean": "bg_mean", "background_std": "bg_std"}
RELABEL_MODES = ("eval", "train")


def property_cnn_config(profile) -> dict:
    """:class:`PropertyCNNSettings` fields: the spec's values overridden by ``stage5.property_cnn``
    (plus ``relabel_mode`` and ``score_batch_size``); the resolution is the profile's."""
    defaults = {f.name: f.default for f in fields(PropertyCNNSettings)}
    defaults.update({"relabel_mode": "eval", "score_batch_size": 64, "threads": None})
    cfg = profile_section(profile, "property_cnn", defaults)
    cfg["resolution"] = int(profile["resolution"])
    if isinstance(cfg["selection_exclude"], list):
        cfg["selection_exclude"] = tuple(cfg["selection_exclude"])
    return cfg


def settings_from(cfg: dict) -> PropertyCNNSettings:
    return PropertyCNNSettings(**{f.name: cfg[f.name] for f in fields(PropertyCNNSettings)})


def _pearson(a, b) -> float | None:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def comparison(pred: np.ndarray, ref: np.ndarray, names) -> dict:
    """Per column: Pearson r, MAE (and RMSE) between predictions and a reference."""
    out = {}
    for j, p in enumerate(names):
        d = pred[:, j].astype(np.float64) - ref[:, j]
        out[p] = {"r": _pearson(pred[:, j], ref[:, j]), "mae": float(np.abs(d).mean()),
                  "rmse": float(np.sqrt((d ** 2).mean()))}
    return out


def truth_comparison(values: np.ndarray, truth: pd.DataFrame) -> dict:
    return {p: _pearson(values[:, j], truth[TRUTH_COLUMNS[p]].to_numpy()) for j, p in enumerate(P7)}


def relabel(model, images, mode: str, batch_size: int, seed: int) -> np.ndarray:
    """Scores [N, 7] of ``images``: eval mode (default) or the original's dropout-on pass (seeded)."""
    if mode not in RELABEL_MODES:
        raise ConfigError(f"relabel_mode must be one of {RELABEL_MODES}, got {mode!r}")
    if mode == "eval":
        return score_images(model, images, batch_size)
    was = model.training
    out = []
    try:
        with torch.inference_mode(), torch.random.fork_rng():
            torch.manual_seed(int(seed))
            model.train()
            for i in range(0, len(images), batch_size):
                out.append(model(to_signed_nchw(images[i:i + batch_size])).numpy())
    finally:
        model.train(was)
    return np.concatenate(out).astype(np.float32)


def run_manifest(cfg: dict) -> dict:
    """The settings recorded in ``run_config.json`` (a re-run or resume must share them)."""
    return {k: v for k, v in cfg.items() if k not in ("score_batch_size", "threads", "max_epochs")}


def shipped_settings(cfg: dict, n: int, img_nos) -> dict:
    """What a shipped property-CNN run must share with this run (``pipeline.shipped``)."""
    return json.loads(json.dumps({**run_manifest(cfg), "images": int(n), "max_epochs": cfg.get("max_epochs"),
                                  "img_nos_sha256": ids_digest(img_nos)}, sort_keys=True, default=str))


def _csv(path: Path, df: pd.DataFrame) -> None:
    atomic_write_text(path, df.to_csv(index=False, lineterminator="\n"))


def main(profile_name: str, consts: dict, args=None, out: str | None = None) -> dict:
    """The stage from ``run_property_score_cnn.py``: settings = constants < profile
    ``stage5.property_cnn`` < flags (the resolution is the profile's); prints the held-out figures."""
    profile = profile_of(profile_name)
    rc = resolve_stage(consts, profile, "stage5.property_cnn", args)
    rt = rc.runtime
    cfg = {**rc.settings.values, "resolution": int(profile["resolution"]), "threads": int(rt.get("threads", 0))}
    cfg["selection_exclude"] = tuple(cfg["selection_exclude"])
    if rt.get("quick"):
        cfg["max_epochs"] = 2
    apply_threads(cfg["threads"])
    if not rt.get("shipped", True):
        profile.setdefault("stage5", {})["use_shipped"] = False
    m = run_property_stage(profile, cfg, out_dir=out, show_progress=bool(rt.get("progress", True)))
    for p, v in m["held_out_vs_stage4"].items():
        truth = m.get("held_out_vs_truth", {}).get(p)
        print(f"{p:>16}: held-out r {v['r']:.4f}  MAE {v['mae']:.4f}"
              + (f"  r vs truth {truth:.4f}" if truth is not None else ""))
    return m


def run_property_stage(profile, cfg: dict | None = None, out_dir: Path | None = None,
                       show_progress: bool = True) -> dict:
    """Train (or load the finished) property CNN, relabel the kept set, write metrics and report."""
    t_start = time.perf_counter()
    cfg = dict(cfg or property_cnn_config(profile))
    settings = settings_from(cfg)
    settings.validate()
    if cfg["relabel_mode"] not in RELABEL_MODES:
        raise ConfigError(f"relabel_mode must be one of {RELABEL_MODES}, got {cfg['relabel_mode']!r}")
    out = Path(out_dir) if out_dir else profile.data_root / OUT_SUBDIR
    target_csv = profile.data_root / TARGET_CSV
    kept = kept_set_of(profile, target_csv, P7, show_progress=show_progress)
    n = len(kept)
    consumed = upstream_records(profile, target_csv)        # stages 1, 2, 4 complete and unchanged
    manifest = run_manifest(cfg)
    check_run_manifest(out / "run_config.json", {**manifest, "images": n})
    lineage.begin(out, consumed, restart_hint(out))          # a model trained on other inputs is refused
    remove_stale_tmp(out)
    ckpt = out / CHECKPOINT
    shipped = None
    if not ckpt.is_file() and not (out / "train_state.pth").is_file():
        shipped = install_run(shipped_dir(profile, "property_cnn"), out, shipped_settings(cfg, n, kept.img_nos),
                               img_nos=kept.img_nos)
    trained_now = not ckpt.is_file()
    say = (lambda m: print(m, flush=True)) if show_progress else None
    if trained_now:
        res = train_property_cnn(kept.images, kept.labels, settings, log_dir=out, checkpoint_path=ckpt,
                                 image_names=[f"{v:06d}.png" for v in kept.img_nos], progress=say or False,
                                 state_path=out / "train_state.pth")
        model, train_seconds = res.model, res.seconds
    else:
        model, train_seconds = load_property_cnn(ckpt, settings.resolution, settings.width, settings.padding,
                                                 settings.head_units), (shipped or {}).get("train_s")
    seeds = np.random.SeedSequence([int(settings.seed), 5]).generate_state(3)
    train_idx, valid_idx = split_indices(n, settings.valid_fraction, int(seeds[0]))
    log = pd.read_csv(out / "train_log.csv")
    best_epoch = int(log["epoch"].iloc[int(np.argmin(log["val_loss_except_back_std"].to_numpy()))])

    t0 = time.perf_counter()
    scores = relabel(model, kept.images, cfg["relabel_mode"], int(cfg["score_batch_size"]), int(settings.seed) + 1)
    t_relabel = time.perf_counter() - t0
    rel_paths = [Path(p).relative_to(profile.data_root).as_posix() if Path(p).is_relative_to(profile.data_root)
                 else str(p) for p in kept.paths]
    df = pd.DataFrame({"img_no": kept.img_nos, "img_path": rel_paths})
    for j, c in enumerate(SCORE_COLUMNS):
        df[c] = np.round(scores[:, j].astype(np.float64), 4)
    _csv(out / RELABEL_CSV, df)
    cmp = pd.DataFrame({"img_no": kept.img_nos, "img_path": rel_paths})
    for j, p in enumerate(P7):
        cmp[f"{p}_v2"] = kept.labels[:, j].astype(np.float64)
        cmp[f"{p}_v2_cnn"] = df[SCORE_COLUMNS[j]]
        cmp[f"{p}_diff"] = np.round(np.abs(cmp[f"{p}_v2"] - cmp[f"{p}_v2_cnn"]), 4)
    _csv(out / "compare" / "all_scores_v2_vs_cnn.csv", cmp)
    scores_rounded = df[list(SCORE_COLUMNS)].to_numpy(np.float64)
    eval_valid = score_images(model, kept.images[torch.from_numpy(valid_idx)], int(cfg["score_batch_size"]))

    truth = _truth(profile, kept.img_nos)
    m = {
        "stage": "5_property_cnn", "profile": profile.name, "images": n,
        "split": {"train": int(len(train_idx)), "valid": int(len(valid_idx)), "seed": int(settings.seed),
                  "split_seed": int(seeds[0])},
        "settings": {**asdict(settings), "relabel_mode": cfg["relabel_mode"]},
        "parameters": count_parameters(model), "trained_this_run": trained_now,
        "epochs": int(len(log)), "best_epoch": best_epoch,
        "stopped_by": ("max_epochs" if settings.max_epochs is not None and len(log) >= settings.max_epochs
                       and len(log) - 1 - best_epoch < settings.patience else "patience"),
        "held_out_vs_stage4": comparison(eval_valid, kept.labels[valid_idx].astype(np.float64), P7),
        "all_vs_stage4": comparison(scores_rounded, kept.labels.astype(np.float64), P7),
        "label_correlation": {a: {b: round(float(v), 4) for b, v in row.items()}
                              for a, row in df[list(SCORE_COLUMNS)].corr().to_dict().items()},
        "timings": {"train_s": round(train_seconds, 1) if train_seconds is not None else None,
                    "relabel_s": round(t_relabel, 2)},
        "peak_rss_mb": round(peak_rss_mb(), 1), **install_record(out),
        "files": {"checkpoint": CHECKPOINT, "relabelled": RELABEL_CSV, "compare": "compare/all_scores_v2_vs_cnn.csv"},
    }
    if truth is not None:
        m["held_out_vs_truth"] = truth_comparison(eval_valid, truth.iloc[valid_idx])
        m["held_out_stage4_vs_truth"] = truth_comparison(kept.labels[valid_idx], truth.iloc[valid_idx])
        m["all_vs_truth"] = truth_comparison(scores_rounded, truth)
    _report(out, profile, m, log, eval_valid, kept.labels[valid_idx], truth.iloc[valid_idx] if truth is not None
            else None)
    m["timings"]["total_s"] = round(time.perf_counter() - t_start, 1)
    lineage.close_stage(out, consumed, m)                    # lineage.json, then metrics.json (last)
    return m


def _truth(profile, img_nos) -> pd.DataFrame | None:
    """World truth of the kept images (world-backed profiles with a stage-1 latents.csv), else None."""
    latents = profile.stage_dir("stage1") / "latents.csv"
    if "world_seed" not in profile or not latents.is_file():
        return None
    return truth_for_images(latents, np.asarray(img_nos), int(profile["world_seed"]),
                            int(profile["generator"]["z_dim"]))


def _report(out: Path, profile, m: dict, log: pd.DataFrame, pred_valid, target_valid, truth_valid) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    axes[0].plot(log["epoch"], log["train_loss"], label="train MSE")
    axes[0].plot(log["epoch"], log["valid_loss"], label="valid MSE")
    axes[0].plot(log["epoch"], log["val_loss_except_back_std"], label="criterion (without background_std)")
    axes[0].axvline(m["best_epoch"], color="k", ls=":", lw=0.8)
    axes[0].set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    for p in P7:
        axes[1].plot(log["epoch"], log[f"{p}_corr"], label=p)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("valid Pearson r")
    axes[1].legend(fontsize=7)
    save_figure(fig, out / "report" / "learning_curves.png")
    fig, axes = plt.subplots(1, 7, figsize=(21, 3.2))
    for j, (ax, p) in enumerate(zip(axes, P7)):
        ax.scatter(target_valid[:, j], pred_valid[:, j], s=4, alpha=0.5)
        lim = [float(min(target_valid[:, j].min(), pred_valid[:, j].min())),
               float(max(target_valid[:, j].max(), pred_valid[:, j].max()))]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_title(f"{p}: r {m['held_out_vs_stage4'][p]['r'] or 0:.3f}", fontsize=8)
        ax.set_xlabel("stage-4 score", fontsize=7)
    axes[0].set_ylabel("CNN (eval mode)", fontsize=7)
    save_figure(fig, out / "report" / "held_out_scatter.png")

    def f(v):
        return "" if v is None else f"{v:.4f}"
    header = ["property", "r vs stage 4", "MAE vs stage 4", "r vs stage 4 (all images)"]
    rows = []
    for p in P7:
        row = [p, f(m["held_out_vs_stage4"][p]["r"]), f(m["held_out_vs_stage4"][p]["mae"]),
               f(m["all_vs_stage4"][p]["r"])]
        if truth_valid is not None:
            row += [f(m["held_out_vs_truth"][p]), f(m["held_out_stage4_vs_truth"][p])]
        rows.append(row)
    if truth_valid is not None:
        header += ["r vs truth (CNN)", "r vs truth (stage-4 score)"]
    sp = m["split"]
    s = m["settings"]
    write_report(out, f"Stage 5 — property-score CNN ({profile.name})", [
        ("Summary", markdown_table(["item", "value"], [
            ["images (train / held out)", f"{m['images']} ({sp['train']} / {sp['valid']}, split seed {sp['split_seed']})"],
            ["architecture", f"{s['resolution']} px, width {s['width']}, padding {s['padding']}, head {s['head_units']}; "
                             f"{m['parameters']:,} parameters"],
            ["training", f"AdamW lr {s['lr']}, batch {s['batch_size']}, cosine T_max {s['t_max']}, patience "
                         f"{s['patience']}, max epochs {s['max_epochs']}"],
            ["epochs run / best", f"{m['epochs']} / {m['best_epoch']} (stopped by {m['stopped_by']})"],
            ["relabelling", f"{s['relabel_mode']} mode" + (" (dropout on: the original's)"
                                                          if s["relabel_mode"] == "train" else "")],
            ["training time", f"{m['timings']['train_s']} s" if m["timings"]["train_s"] is not None
             else "(finished earlier)"],
        ])),
        ("Held-out images (eval mode)", markdown_table(header, rows)
         + "\n\nThe original's CNN reached on its 471 held-out images r = 0.869 / 0.980 / 0.902 / 0.975 / 0.994 / "
           "0.979 / 0.643 (P7 order)."),
        ("Learning curves", "![curves](report/learning_curves.png)"),
        ("CNN against the stage-4 scores (held out)", "![scatter](report/held_out_scatter.png)"),
        ("Files", f"- `{CHECKPOINT}`, `train_log.csv`, `val_log.csv`\n- `{RELABEL_CSV}`: labels of FineTune-v3 / v4\n"
                  "- `compare/all_scores_v2_vs_cnn.csv`"),
    ])
