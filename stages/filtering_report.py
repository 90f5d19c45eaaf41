"""Filtering (stage 2) report: accuracy against the world's truth, per-fold tables, figures, report.md."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from cnn.filter_cnns import MEANING
from cnn.kfold import DETAIL_COLUMNS, FoldSettings, derive_seed
from pipeline.reports import markdown_table, save_figure, write_report
from training.filter_cnns import read_train_log

COLUMN_ORDER = ("gender", "quality", "age", "glass")       # merged-CSV column order
TRUTH_POSITIVE = {"gender": ("female", 1), "quality": ("quality_defect", 0), "age": ("old", 1),
                  "glass": ("glasses", 1)}


def truth_metrics(scores: pd.DataFrame, truth: pd.DataFrame, rules: dict, kept: np.ndarray) -> dict:
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


def curves_figure(log_dir: Path, prop: str, folds: int, path: Path):
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


def fold_table(log_dir: Path, prop: str, s: FoldSettings) -> list[dict]:
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


def attempt_seeds(rows: list[dict]) -> dict:
    return {str(r["fold"]): r["seed"] for r in rows}


def _f(v, nd=4):
    return "" if v is None or v == "" else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def write_stage_report(out_dir, profile_name: str, profile_note: str, m, props_run, props_col, log_dir, fsets, scored, rules, truth, merged_name):
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
          + (profile_note or "(none)")))
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
    write_report(out_dir, f"Stage 2 — filter CNNs ({profile_name})", sections)
