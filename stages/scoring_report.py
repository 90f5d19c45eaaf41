"""Scoring (stage 4) report: histograms, correlations, truth scatter, example maps, report.md."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pipeline.io import atomic_write_json
from pipeline.reports import markdown_table, save_figure, write_report
from segmentation import property_scores as ps
from synthface.renderer import colorize_mask

from .scoring_inputs import decode

REPORT_VERSION = 2                      # bump when a report figure is drawn differently (redraws them)
# score -> the world parameter it measures (synthface truth)
TRUTH_COLUMNS = {"eyes": "eyes_open", "mouth": "mouth_open", "pose": "pose", "hair_color": "hair_color",
                 "hair_length": "hair_length", "background_mean": "bg_mean", "background_std": "bg_std",
                 "hairstyle": "hairstyle"}
HAIRSTYLE_TRUTH_THRESHOLD = 0.5         # truth hairstyle in [0, 1]: > 0.5 = curly (the world's midpoint)


def _histograms_figure(scores: pd.DataFrame, cols, path: Path):
    fig, axes = plt.subplots(2, 4, figsize=(14, 5.6))
    for ax, c in zip(axes.flat, cols):
        ax.hist(scores[c].to_numpy(), bins=50, color="#4c72b0")
        ax.set_title(c, fontsize=9)
    for ax in list(axes.flat)[len(cols):]:
        ax.axis("off")
    fig.suptitle("2nd-algorithm scores, N(0, 1)", fontsize=10)
    return save_figure(fig, path)


def _corr_figure(scores: pd.DataFrame, cols, path: Path):
    c = scores[cols].corr().to_numpy()
    names = [x[:-len("_score")] for x in cols]
    fig, ax = plt.subplots(figsize=(7.2, 6))
    im = ax.imshow(c, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{c[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if abs(c[i, j]) > 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("Pearson correlation of the scores")
    return save_figure(fig, path)


def _truth_figure(raw: pd.DataFrame, truth: pd.DataFrame, path: Path):
    t = truth.loc[raw["img_no"].to_numpy()]
    cols = [c for c in ps.V2_COLUMNS if c in TRUTH_COLUMNS]
    fig, axes = plt.subplots(2, 4, figsize=(14, 6))
    for ax, c in zip(axes.flat, cols):
        ax.scatter(t[TRUTH_COLUMNS[c]], raw[c], s=3, alpha=0.4)
        ax.set_xlabel(f"truth {TRUTH_COLUMNS[c]}", fontsize=8)
        ax.set_ylabel(f"raw {c}", fontsize=8)
    fig.suptitle("raw 2nd-algorithm values (parsed maps) against the world truth", fontsize=10)
    return save_figure(fig, path)


def _examples(raws, scores, items, n_examples: int) -> list[int]:
    """Image numbers of the example maps: the lowest and highest eyes, mouth, pose and hairstyle scores."""
    df = scores["v2"]
    picks = []
    for c in ("eyes_score", "mouth_score", "pose_score", "hairstyle_score"):
        order = df.sort_values([c, "img_no"], kind="stable")["img_no"].tolist()
        for n in (order[0], order[-1]):
            if n not in picks:
                picks.append(int(n))
    return picks[:max(0, n_examples)]


def _example_figure(picks, items, scores, size, path: Path):
    by_no = {it.img_no: it for it in items}
    df = scores["v2"].set_index("img_no")
    tiles, titles = [], []
    for n in picks:
        it = by_no[n]
        face = decode(it.paths["face"], "face", size)
        vis_path = it.paths["parsing"].with_name(f"parsing_visualization_{n:06d}.png")
        vis = cv2.imread(str(vis_path), cv2.IMREAD_COLOR)
        vis = (cv2.cvtColor(vis, cv2.COLOR_BGR2RGB) if vis is not None and vis.shape[:2] == (size, size)
               else colorize_mask(decode(it.paths["parsing"], "parsing", size)))
        r = df.loc[n]
        tiles.append(np.concatenate([face, vis], axis=1))
        titles.append(f"{n:06d}: eyes {r['eyes_score']:.2f}, mouth {r['mouth_score']:.2f}\n"
                      f"pose {r['pose_score']:.2f}, hairstyle {r['hairstyle_score']:.2f}")
    ncols = 4
    nrows = int(np.ceil(len(tiles) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.1 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(tiles):
            ax.imshow(tiles[i])
            ax.set_title(titles[i], fontsize=8)
    fig.suptitle("examples: face crop | parsing map (N(0, 1) scores)", fontsize=10)
    return save_figure(fig, path)


class _Figures:
    """Report figures, redrawn only when their data changed (a re-run over the cache reuses them)."""

    def __init__(self, rep: Path, digest: str):
        self.rep, self.digest, self.names = rep, digest, []
        try:
            old = json.loads((rep / "figures.json").read_text())
        except (OSError, json.JSONDecodeError):
            old = {}
        self.reuse = set(old.get("files", [])) if old.get("digest") == digest else set()

    def get(self, name: str, draw) -> Path:
        path = self.rep / name
        self.names.append(name)
        if name in self.reuse and path.is_file():
            return path
        return draw(path)

    def close(self) -> None:
        atomic_write_json(self.rep / "figures.json", {"digest": self.digest, "files": sorted(self.names)})


def _figure_digest(out_dir: Path, truth, picks, settings) -> str:
    h = hashlib.sha256(f"{REPORT_VERSION}".encode())
    for p in sorted(out_dir.glob("*.csv")):
        h.update(p.name.encode() + p.read_bytes())
    if truth is not None:
        h.update(truth.to_csv().encode())
    figure_settings = {k: v for k, v in asdict(settings).items() if k != "batch_size"}
    h.update(json.dumps([picks, figure_settings], default=str).encode())
    return h.hexdigest()


def write_stage_report(out_dir, profile_name: str, settings, m, raws, scores, items, truth, size):
    rep = out_dir / "report"
    picks = _examples(raws, scores, items, settings.examples)
    figs = _Figures(rep, _figure_digest(out_dir, truth, picks, settings))
    v2cols = [f"{c}_score" for c in ps.V2_COLUMNS]
    c = m["counts"]
    secs = [("Summary", markdown_table(["item", "value"], [
        ["images", c["images"]], ["scored this run / from the cache", f"{c['computed_this_run']} / {c['from_cache']}"],
        ["map size", f"{m['map_size']} x {m['map_size']}"], ["algorithms", ", ".join(settings.algorithms)],
        ["1st-algorithm colour image", settings.v1_image if "v1" in settings.algorithms else "-"],
        ["hairstyle left check", settings.hairstyle_left_check],
        ["eye pixels used", "all (original)" if settings.eye_components == "all" else "largest component per eye"],
        ["compute throughput", f"{m['throughput']['compute_images_per_s']} images/s"],
        ["time (inputs, scores, CSVs)", f"{m['timings']['scores_and_csvs_s']:.1f} s"],
        ["inner mouth absent (mouth = 0)", f"{m['mouth_zero_share']:.1%}"],
    ]))]
    hist = figs.get("score_histograms.png", lambda p: _histograms_figure(scores["v2"], v2cols, p))
    secs.append(("Score histograms", f"![histograms](report/{hist.name})"))
    corr = figs.get("score_correlation.png", lambda p: _corr_figure(scores["v2"], v2cols, p))
    secs.append(("Correlation matrix", f"![correlation](report/{corr.name})\n\nThe original's 4,703 real images: "
                 "eyes vs mouth -0.38, hair length vs background std -0.17, hair colour vs background mean +0.14, "
                 "others |r| < 0.08."))
    if "v1_vs_v2_pearson" in m:
        secs.append(("1st vs 2nd algorithm", "Pearson r of the raw values per property (the original measured "
                     "eyes 0.902, hair colour 0.694, hair length 0.960, mouth 0.900, pose 0.689, background mean "
                     "0.975, background std 0.775 on its images):\n\n"
                     + markdown_table(["property", "r (v1, v2)"],
                                      [[p, m["v1_vs_v2_pearson"][p]] for p in ps.PROPERTIES])))
    rows = []
    for src, counts in m["fallbacks"].items():
        for name, k in counts.items():
            kind, text = ps.FLAGS.get(name, ("?", ""))
            rows.append([src, name, kind, k, text])
    secs.append(("Fallbacks and conditions", markdown_table(["scored", "flag", "kind", "images", "meaning"], rows)
                 if rows else "No fallback fired."))
    tm = m.get("truth")
    if tm:
        tr = []
        for col in ps.V2_COLUMNS:
            p = tm["parsed"]["v2"][col]
            t = tm.get("true_mask", {}).get("v2", {}).get(col, {})
            tr.append([col, p["truth_column"], _f(p["pearson"]), _f(t.get("pearson")), _f(p["spearman"]),
                       _f(t.get("spearman")), _f(p.get("auc")), _f(t.get("auc")),
                       _f(tm.get("parsed_vs_true_mask_pearson", {}).get(col))])
        body = (f"2nd algorithm against the world's truth(z) on the {m['counts']['images']} images: on the parsed "
                "maps and on the renderer's exact masks (the algorithm's own ceiling). Hairstyle AUC: truth "
                f"hairstyle > {HAIRSTYLE_TRUTH_THRESHOLD} counts as curly.\n\n"
                + markdown_table(["score", "truth", "r parsed", "r true mask", "rho parsed", "rho true mask",
                                  "AUC parsed", "AUC true mask", "r parsed vs true"], tr))
        if "v1" in tm["parsed"]:
            body += "\n\n1st algorithm, Pearson r (parsed / true mask): " + ", ".join(
                f"{col} {_f(tm['parsed']['v1'][col]['pearson'])} / "
                f"{_f(tm.get('true_mask', {}).get('v1', {}).get(col, {}).get('pearson'))}" for col in ps.PROPERTIES)
        fig = figs.get("truth_scatter.png", lambda p: _truth_figure(raws["v2"], truth, p))
        secs.append(("Against the truth", body + f"\n\n![truth](report/{fig.name})"))
    if picks:
        ex = figs.get("examples.png", lambda p: _example_figure(picks, items, scores, size, p))
        secs.append(("Example maps", "Lowest and highest eyes, mouth, pose and hairstyle scores (N(0, 1) values).\n\n"
                     f"![examples](report/{ex.name})"))
    files = ["- `all_scores_v2.csv`: the 2nd algorithm, N(0, 1), 4 decimals; `hairstyle_score` is the last column",
             "- `all_scores.csv`: the 1st algorithm (same format, seven scores)" if "v1" in settings.algorithms else "",
             "- `*_raw.csv`: raw values and the fallbacks / conditions of each image (`score_flags`)",
             "- `*_norm_stats.json`: the z-score statistics (mean, std with ddof 1) of each column",
             "- `true_mask_*_raw.csv`: the same algorithms on the exact masks" if "true_mask" in (tm or {}) else "",
             f"- `{m['cache']}/`: per-image cache (delete it to recompute everything)"]
    secs.append(("Files", "\n".join(f for f in files if f)))
    figs.close()
    write_report(out_dir, f"Stage 4 — property scores ({profile_name})", secs)


def _f(v, nd=4):
    return "" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))
