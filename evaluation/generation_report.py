"""The figures and ``report.md`` of one generation test (:mod:`evaluation.generation`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.reports import markdown_table, plt, save_figure, write_report
from pipeline.vocabulary import CONTROLLED
from stylegan.generator import postprocess
from stylegan_modified.conditional import batch_ranges


def mosaic_figure(cells: list, row_names: list, col_names: list | None, path: Path, title: str,
                  captions: list | None = None) -> Path:
    """Images (uint8 HWC; ``None`` = empty cell) as one mosaic with row / column labels and
    optional per-cell captions: one ``imshow``, so it stays fast for a few hundred images."""
    first = next(c for row in cells for c in row if c is not None)
    h, w, gap = first.shape[0], first.shape[1], 2
    ncols = max(len(r) for r in cells)
    canvas = np.full(((h + gap) * len(cells) - gap, (w + gap) * ncols - gap, 3), 255, np.uint8)
    for i, row in enumerate(cells):
        for j, img in enumerate(row):
            if img is not None:
                canvas[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = img
    scale = 1.1 / max(h, 1) * 1.0
    fig, ax = plt.subplots(figsize=(max(4.0, ncols * w * scale + 1.5), max(2.0, len(cells) * h * scale + 0.8)))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_yticks([i * (h + gap) + h / 2 for i in range(len(cells))], row_names, fontsize=7)
    if col_names:
        ax.set_xticks([j * (w + gap) + w / 2 for j in range(len(col_names))], col_names, fontsize=7)
    else:
        ax.set_xticks([])
    for i, row in enumerate(captions or []):
        for j, text in enumerate(row):
            if text:
                ax.text(j * (w + gap) + w / 2, i * (h + gap) + h - 1, text, fontsize=6, ha="center", va="bottom",
                        bbox={"facecolor": "white", "alpha": 0.7, "pad": 1, "linewidth": 0})
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=8)
    return save_figure(fig, path)


def write_test_report(out_dir, generator, z_best, labels, grid3, s, metrics, tables, measured, primary, history,
                      title) -> None:
    best = metrics["best_z"]
    with torch.inference_mode():
        imgs = np.concatenate([postprocess(generator.render(torch.from_numpy(np.repeat(z_best[None], b - a, 0)),
                                                            torch.from_numpy(labels[a:b])))
                               for a, b in batch_ranges(len(labels), s.batch_size)])
    ref = s.reference()
    cells, captions = [], []
    for p in CONTROLLED:                      # one row per property, the others at their reference value
        row = []
        for v in s.grid[p]:
            k = np.flatnonzero(np.all(np.isclose(grid3, [v if q == p else ref[q] for q in CONTROLLED]), axis=1))
            row.append(imgs[k[0]] if len(k) else None)
        cells.append(row)
        captions.append([f"{p} {v:+g}" for v in s.grid[p]])
    others = ", ".join(f"{q} {ref[q]:+g}" for q in CONTROLLED)
    mosaic_figure(cells, list(CONTROLLED), None, out_dir / "best_z_grid.png",
                  f"z {best}: one property varied per row (the others at {others})", captions)
    inner = s.loop_order[-1]
    n_inner = len(s.grid[inner])
    rows = [list(imgs[a:a + n_inner]) for a in range(0, len(imgs), n_inner)]
    outer = [", ".join(f"{q} {v:+g}" for q, v in zip(CONTROLLED, grid3[a]) if q != inner)
             for a in range(0, len(imgs), n_inner)]
    mosaic_figure(rows, outer, [f"{inner} {v:+g}" for v in s.grid[inner]], out_dir / "best_z_all_labels.png",
                  f"z {best}: all {len(labels)} labels")
    fig, axes = plt.subplots(1, len(CONTROLLED), figsize=(4 * len(CONTROLLED), 3.6))
    for ax, (i, p) in zip(axes, enumerate(CONTROLLED)):
        x = grid3[:, i]
        for name in measured:
            ax.scatter(x, measured[name][p][best], s=12, label=name, alpha=0.7)
        lim = [float(x.min()) - 0.5, float(x.max()) + 0.5]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_xlabel(f"{p} label")
        ax.set_ylabel("measured")
        ax.set_title(f"{p}: r {tables[primary][f'{p}_corr'].iat[best]:.3f}")
    axes[0].legend(fontsize=7)
    save_figure(fig, out_dir / "best_z_scatter.png")

    header = ["judge", "passes"] + [f"{p} r mean / best" for p in CONTROLLED] + [f"{p} MAE mean / best" for p in CONTROLLED]
    rows = []
    for name, summ in metrics["judges"].items():
        rows.append([name, f"{summ['passes']} / {metrics['n_z']}"]
                    + [f"{summ['mean'][f'{p}_corr']:.3f} / {summ['best'][f'{p}_corr']:.3f}" for p in CONTROLLED]
                    + [f"{summ['mean'][f'{p}_mae']:.3f} / {summ['best'][f'{p}_mae']:.3f}" for p in CONTROLLED])
    thr = markdown_table(["property", "grid", "min r", "max MAE"],
                         [[p, ", ".join(f"{v:+g}" for v in s.grid[p]), s.min_r[p], s.max_mae[p]] for p in CONTROLLED])
    pt = tables[primary]
    leak_cols = [c for c in pt if c.startswith("leak_")]
    stab_cols = [c for c in pt if c.endswith("_stability")]
    sections = [
        ("Settings", f"{metrics['n_z']} latents ({metrics['z_source']}) x {metrics['n_labels']} labels = "
                     f"{metrics['n_images']} images in batches of {s.batch_size}; other labels "
                     f"{s.label_fill or 0}; measured values rounded to {s.round_decimals} decimals. "
                     f"{metrics['images_per_second']} images/s (render + judges).\n\n" + thr),
        ("Result", f"Primary judge `{primary}`: **{metrics['passes']} of {metrics['n_z']}** latents pass all six "
                   f"thresholds. Best latent: {best}.\n\n" + markdown_table(header, rows)),
        ("Best latent", "![grid](best_z_grid.png)\n\n![scatter](best_z_scatter.png)\n\n"
                        "![all labels](best_z_all_labels.png)"),
        ("Leaks and identity (primary judge, mean over latents)",
         markdown_table(["metric", "mean"], [[c, float(pt[c].mean())] for c in leak_cols + stab_cols])),
    ]
    if history is not None and len(history):
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for name, h in history.groupby("judge", sort=False):
            for p in CONTROLLED:
                ax.plot(h["epoch"], h[f"{p}_corr_mean"], marker="o", ls="-" if name == primary else "--",
                        label=f"{name} {p}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean r over latents")
        ax.legend(fontsize=7)
        save_figure(fig, out_dir / "r_per_epoch.png")
        ph = history[history["judge"] == primary]
        sections.append(("r per epoch", "![r per epoch](r_per_epoch.png)\n\n" + markdown_table(
            ["epoch", "passes"] + [f"{p} r" for p in CONTROLLED],
            [[int(r["epoch"]), int(r["passes"])] + [float(r[f"{p}_corr_mean"]) for p in CONTROLLED]
             for _, r in ph.iterrows()])))
    write_report(out_dir, title + (f" (epoch {metrics['epoch']})" if metrics["epoch"] is not None else ""), sections)

