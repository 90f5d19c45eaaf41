"""report.md of stage 6 (FineTune-v9): curves, concept figures of both judges, branch use, sample grid."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.v9_acceptance import base_generator
from pipeline.reports import contact_sheet_figure, markdown_table, plt, save_figure, write_report
from stylegan.generator import postprocess
from stylegan.sampling import generate_uint8
from stylegan_modified.conditional import synthesize

from .bases import base_generator_state
from .finetune_gan import loss_figure

CONCEPT_PANELS = (("cnn_gender", "eval_female", "female"), ("cnn_quality", "eval_good_quality", "good quality"),
                  ("cnn_age", "eval_old", "old"), ("cnn_glass", "eval_glasses", "glasses"))


def concept_figure(concept_log: pd.DataFrame, path: Path) -> Path:
    """Per log point: the stage-2 CNN mean score beside the evaluator's share, one panel per concept."""
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    x = np.arange(len(concept_log))
    for ax, (cnn, ev, name) in zip(axes, CONCEPT_PANELS):
        ax.plot(x, concept_log[cnn], marker=".", label="stage-2 CNN mean score")
        if concept_log[ev].notna().any():
            ax.plot(x, concept_log[ev], marker=".", label="evaluator share")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("log point")
        ax.legend(fontsize=7)
    fig.suptitle("concept figures of 100 random outputs per log point", fontsize=10)
    return save_figure(fig, path)


def branch_figure(m: dict, path: Path) -> Path:
    """‖w2'‖/‖w1'‖ and the new branch's variance shares: original init, start, after each epoch, end."""
    b = m["branch"]
    pts = [("init N(0,0.15²)", b.get("original_init")), ("start", b.get("start"))]
    pts += [(f"epoch {i}", r) for i, r in enumerate(b.get("per_epoch") or [])]
    pts = [(k, v) for k, v in pts if v]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    xs = np.arange(len(pts))
    axes[0].plot(xs, [v["norm_ratio_w2_w1"] for _, v in pts], marker="o")
    axes[0].set_title("mean ‖w2'‖ / ‖w1'‖", fontsize=9)
    for key in ("var_share_mapping_split1", "var_share_mapping_split2"):
        axes[1].plot(xs, [v[key] for _, v in pts], marker="o", label=key)
    axes[1].set_title("share of the variance in the new branch", fontsize=9)
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.set_xticks(xs, [k for k, _ in pts], rotation=30, fontsize=7)
    return save_figure(fig, path)


def sample_grid(profile, g9, g1, path: Path, n: int = 8, seed: int = 0) -> Path:
    """Rows base G / v1 / v9, columns the same n random (z, label)."""
    rng = np.random.default_rng([int(seed), 17_001])
    z = rng.normal(size=(n, g9.cfg.z_dim)).astype(np.float32)
    y = rng.normal(size=(n, g9.spec.label_dim)).astype(np.float32)
    rows, titles = [], []
    state = base_generator_state(profile)[0]
    rows.append(generate_uint8(base_generator(state, g9.cfg), z))
    rows.append(postprocess(synthesize(g1, z, y)))
    rows.append(postprocess(synthesize(g9, z, y)))
    for name in ("base", "v1", "v9"):
        titles += [f"{name} z{i}" for i in range(n)]
    return contact_sheet_figure(list(np.concatenate(rows)), titles, path, ncols=n,
                                suptitle="the same random (z, label): base G (z only), FineTune-v1, FineTune-v9")


def _acceptance_table(a: dict) -> str:
    gens = [k for k in ("base", "v1", "v9") if k in a["generators"]]
    rows = []
    first = a["generators"][gens[0]]
    for c in (first.get("evaluator_shares") or {}):
        rows.append([f"evaluator: {c}"] + [f"{a['generators'][g]['evaluator_shares'][c]:.1%}" for g in gens]
                    + [f"{a['kept_set']['evaluator_shares'][c]:.1%}" if "kept_set" in a else "-"])
    for p in first["cnn_means"]:
        rows.append([f"stage-2 CNN mean: {p}"] + [f"{a['generators'][g]['cnn_means'][p]:.4f}" for g in gens]
                    + [f"{a['kept_set']['cnn_means'][p]:.4f}" if "kept_set" in a else "-"])
    for c in (first.get("evaluator_std") or {}):
        rows.append([f"std {c} (ratio to kept)"]
                    + [f"{a['generators'][g]['evaluator_std'][c]:.3f} ({a['generators'][g]['std_ratio_to_kept'][c]:.2f})"
                       for g in gens] + [f"{a['kept_set']['evaluator_std'][c]:.3f}"])
    if "frechet_to_kept" in first:
        rows.append(["Fréchet distance to the kept set"] + [f"{a['generators'][g]['frechet_to_kept']:.2f}" for g in gens]
                    + ["0"])
    return markdown_table(["figure"] + gens + ["kept set"], rows)


def write_v9_report(out: Path, profile, s, m: dict, rows: list, g9=None, g1=None) -> None:
    secs = []
    a = m["acceptance"]
    checks = a.get("checks", {})
    summary = markdown_table(["item", "value"], [
        ["kept images", m["images"]],
        ["epochs / steps", f"{s.epochs} / {m['steps']} (global batch {s.batch_size}, "
                           f"{m['distributed']['world_size']} process(es))"],
        ["start", s.start + (" (regressed new branch, docs/notes/v9_regress_start.md)" if s.start == "regress" else
                             " (N(0, 0.15²) on the stored parameters, the original's)")],
        ["loss / optimiser", f"logistic, R1 γ {s.r1_gamma}; AdamW lr {s.lr}, weight decay {s.weight_decay}"],
        ["step rule", f"D up to {s.d_max_updates} while L_D ≥ {s.d_ratio}·last L_G; G up to {s.g_max_updates} while "
                      f"L_G ≥ {s.g_ratio}·L_D; counts {m['update_counts']}"],
        ["training time", f"{m['train_seconds']} s ({m['seconds_per_step']} s / step incl. monitoring)"],
        ["installed from the shipped run", m["installed_from_shipped"]],
        ["acceptance checks", ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in checks.items()) or "-"],
    ])
    secs.append(("Summary", summary))
    if rows:
        loss_figure(rows, out / "report" / "training_curves.png", "FineTune-v9")
        secs.append(("Training curves", "![curves](report/training_curves.png)"))
    if (out / "concept_log.csv").is_file():
        concept_figure(pd.read_csv(out / "concept_log.csv"), out / "report" / "concepts.png")
        secs.append(("Concepts per log point (stage-2 CNNs and the independent evaluator)",
                     "![concepts](report/concepts.png)"))
    branch_figure(m, out / "report" / "branch.png")
    b = m["branch"]
    secs.append(("The new branch", "![branch](report/branch.png)\n\n" + markdown_table(
        ["when", "‖w2'‖/‖w1'‖", "var share split1", "var share split2"],
        [[k, f"{v['norm_ratio_w2_w1']:.4g}", f"{v['var_share_mapping_split1']:.4g}",
          f"{v['var_share_mapping_split2']:.4g}"]
         for k, v in (("original init", b.get("original_init")), ("start", b.get("start")), ("end", b.get("end")))
         if v])))
    secs.append((f"Acceptance: {a['n']} random outputs (`acceptance.json`)", _acceptance_table(a)))
    if g9 is not None and g1 is not None:
        sample_grid(profile, g9, g1, out / "report" / "samples.png", seed=s.seed)
        secs.append(("Random outputs", "![samples](report/samples.png)"))
    last = f"grids/epoch_{s.epochs - 1:04d}.png"
    if (out / last).is_file():
        secs.append(("Last epoch's monitoring grid", f"![grid]({last})"))
    write_report(out, f"Stage 6 — FineTune-v9 ({profile.name})", secs)
