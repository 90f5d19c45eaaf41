"""Stage 5b: the FineTune-v1 / v4 stage (entry point ``run_stylegan_fine_tuning_v1.py``).

Inputs: the kept images (``stage2/filtered/``) with labels joined by image number — v1: the
1st-algorithm scores ``stage4/all_scores.csv`` (P7, the original's), v4: the property CNN's
``stage5/property_cnn/all_scores_v2_cnn.csv`` (eyes, mouth, pose); the starting models — v1:
the profile's base G and D, v4: the finished v1 (``stage5/v1/generator.pth``, ``discriminator.pth``).

Outputs (``stage5/v1/`` or ``stage5/v4/``):

* ``train_log.csv``: the original's columns (pandas index, ``epoch, idx, d_loss, g_loss,
  g_train_count, real_scores_mean, fake_scores_mean, real_fake_auroc``, 4 decimals; every 10th
  batch and every batch with idx < 10 in epoch 0); ``train_steps.csv``: every step (+ R1);
* ``grids/epoch_EEEE.png``: 10 fixed z x the 7 monitoring labels after each epoch;
* ``checkpoints/epoch_EEEE_{gen,dis}.pth``: G / D state dicts after each epoch;
  ``train_state.pth``: the resumable state (every ``checkpoint_every`` steps and each epoch end);
* ``generator.pth``, ``discriminator.pth``: the finished models (the original's file layout);
* ``generation_test/`` (the 30 z x 50 labels protocol, both judges), ``metrics.json``, ``report.md``.

A run whose state has reached the requested epochs is finished: a re-run only repeats the
generation test and the report.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.generation import render_plan, run_generation_test
from evaluation.generation import settings_from as test_settings_from
from evaluation.grids import grid_figure
from evaluation.judges import calibration_cache, evaluator_calibration, make_judges
from evaluation.networks import (NetworkInputError, evaluator_path, load_evaluator_for, load_gender_cnn,
                                 load_property_cnn_for)
from evaluation.tables import (female_share, female_table, generation_test_table, leak_identity_table,
                               oracle_reference)
from pipeline.io import InputError, atomic_write_csv, atomic_write_text, remove_stale_tmp
from pipeline import lineage
from pipeline.reports import markdown_table, plt, save_figure, write_report
from pipeline.runtime import peak_rss_mb
from pipeline.shipped import install_record, run_settings, shipped_dir
from pipeline.vocabulary import CONTROLLED as P3
from pipeline.vocabulary import PROPERTIES as P7
from stylegan_modified.conditional import build_discriminator, build_generator
from stylegan_modified.distributed import DistContext, init_distributed
from stylegan_modified.loading import (init_discriminator_from, init_generator_from, load_discriminator,
                                       load_generator, regress_label_path)
from training.gan import GanSettings, GanTrainer, log_rows
from training.loop import FineTuneLoop, LoopSettings, ShippedRun, settings_key

from .bases import (base_discriminator_state, base_generator_state, build_configs, kept_set_of, latents_of,
                    restart_hint, shipped_bases, upstream_records)
from .settings import (distributed, given_flags, prepare_runtime, profile_of, resolve_stage, settings_of, summary_text,
                       write_settings)

PROPERTY_CNN = "stage5/property_cnn/property_score_cnn.pth"
CNN_LABELS = "stage5/property_cnn/all_scores_v2_cnn.csv"
DEFAULT_LABELS = {"v1": "stage4/all_scores.csv", "v4": CNN_LABELS}
LABEL_NAMES = {"v1": P7, "v4": P3}
# a shipped run (pipeline.shipped): G and D as partial checkpoints against the base, the logs and grids,
# and the training record kept in train_state.pth
GAN_SHIPPED_MODELS = {"generator.pth": "generator", "discriminator.pth": "discriminator"}
GAN_SHIPPED_COPY = ("train_log.csv", "train_steps.csv", "grids/*.png")


def default_paths(profile, version: str) -> dict:
    root = profile.data_root
    return {"out": root / "stage5" / version, "labels": root / DEFAULT_LABELS[version],
            "property_cnn": root / PROPERTY_CNN, "init": root / "stage5" / "v1"}


def start_models(profile, s: GanSettings, init_dir: Path, kept=None):
    """G and D of ``s.version`` started as the settings say; returns (g, d, what was done).
    ``dense0='regress'`` sets the label path of all the version's labels from the kept set."""
    gcfg, dcfg = build_configs(profile)
    g = build_generator(gcfg, s.version, seed=s.seed)
    d = build_discriminator(dcfg, s.version, seed=s.seed, mbstd_group_size=s.mbstd_group)
    if s.version == "v1":
        g_state, g_src = base_generator_state(profile)
        d_state, d_src = base_discriminator_state(profile)
        src_spec = None
    else:
        for name in ("generator.pth", "discriminator.pth"):
            if not (Path(init_dir) / name).is_file():
                raise InputError(f"v4 starts from the finished FineTune-v1: {Path(init_dir) / name} not found; "
                                       f"run run_stylegan_fine_tuning_v1.py first (or pass --init-dir)")
        g_state = load_generator(Path(init_dir) / "generator.pth", gcfg, "v1").state_dict()
        d_state = load_discriminator(Path(init_dir) / "discriminator.pth", dcfg, "v1").state_dict()
        g_src, d_src, src_spec = str(Path(init_dir) / "generator.pth"), str(Path(init_dir) / "discriminator.pth"), "v1"
    done = {"generator_source": g_src, "discriminator_source": d_src,
            **init_generator_from(g, g_state, source_spec=src_spec, dense0="keep" if s.dense0 == "regress" else s.dense0,
                                  label_weight=s.label_weight),
            **init_discriminator_from(d, d_state, source_spec=src_spec, head=s.head)}
    if s.dense0 == "regress":
        done.update(regress_label_path(g, latents_of(profile, kept.img_nos), kept.labels,
                                       [n for n in s.regress_labels.split(",") if n in g.label_names], seed=s.seed))
    return g, d, done


def main(profile_name: str, consts: dict, args=None, paths: dict | None = None) -> dict | None:
    """The stage from a script: settings = constants < profile ``stage5.v1`` / ``stage5.v4`` < flags,
    recorded in ``run_config.json``; then :func:`run_gan_stage`; prints the outcome."""
    profile = profile_of(profile_name)
    given = given_flags(args)
    version = "v4" if given.get("v4", consts.get("v4", False)) else "v1"
    cfg = resolve_stage(consts, profile, f"stage5.{version}", args)
    s = settings_of(GanSettings, cfg.settings.values, version=version)
    paths = dict(paths or {})
    upstream_records(profile, Path(paths.get("labels") or default_paths(profile, version)["labels"]))  # before writing
    write_settings(Path(paths.get("out") or default_paths(profile, version)["out"]), cfg)
    test = dict(cfg.test.values)
    female_n = prepare_runtime(profile, s, test, cfg.runtime)
    with distributed(cfg.runtime) as ctx:
        m = run_gan_stage(profile, s, test, out_dir=paths.get("out"), label_file=paths.get("labels"),
                          property_cnn_path=paths.get("property_cnn"), init_dir=paths.get("init_dir"),
                          evaluator=paths.get("evaluator"), ctx=ctx, female_n=female_n,
                          show_progress=bool(cfg.runtime.get("progress", True)))
    if m is not None:
        fem = {k: v["share"] for k, v in m["female_share"].items() if isinstance(v, dict)}
        print(summary_text(f"FineTune-{version}: {m['steps']} steps, {m['train_seconds']} s; female share {fem}",
                           m["generation_test"]))
    return m


def run_gan_stage(profile, s: GanSettings, test_cfg: dict, out_dir: Path | None = None,
                  label_file: Path | None = None, property_cnn_path: Path | None = None,
                  init_dir: Path | None = None, evaluator: str | None = None, ctx: DistContext | None = None,
                  female_n: int = 300, show_progress: bool = True) -> dict | None:
    """Train (or resume, or install the shipped run, or skip when finished), then test and report on
    the main process."""
    s.validate()
    ctx = ctx or init_distributed()
    paths = default_paths(profile, s.version)
    out = Path(out_dir) if out_dir else paths["out"]
    label_file = Path(label_file) if label_file else paths["labels"]
    kept = kept_set_of(profile, label_file, LABEL_NAMES[s.version], show_progress=show_progress and ctx.is_main)
    consumed = upstream_records(profile, label_file)        # upstream stages complete and unchanged
    if ctx.is_main:
        lineage.begin(out, consumed, restart_hint(out))      # a run trained on other inputs is refused
        remove_stale_tmp(out)
    ctx.barrier()
    key = {**settings_key(s), "labels": str(label_file), "images": len(kept)}
    g, d, init_done = start_models(profile, s, Path(init_dir) if init_dir else paths["init"], kept)
    g.to(ctx.device)
    d.to(ctx.device)
    loop = FineTuneLoop(GanTrainer(g, d, kept.labels, s, ctx), kept, out,
                        LoopSettings(s.version, s.epochs, s.batch_size, s.seed, s.checkpoint_every,
                                     s.max_steps_per_epoch, s.drop_last), key, ctx, show_progress)
    loop.start(init_done, ShippedRun(shipped_dir(profile, s.version),
                                     run_settings(profile.data_root, key, s.epochs, kept.img_nos),
                                     lambda: shipped_bases(profile, GAN_SHIPPED_MODELS), kept.img_nos))

    def monitor(epoch: int) -> None:
        """The epoch's monitoring grid and logs (v1 / v4 run the generation test once, at the end)."""
        grid_figure(g, out / "grids" / f"epoch_{epoch:04d}.png", s.grid_z, s.seed,
                    f"{s.version} after epoch {epoch}: 10 z x the 7 monitoring labels")
        _write_logs(out, loop.log["rows"], s)

    res = loop.run(monitor)
    if not ctx.is_main:
        return None
    _write_logs(out, res.log["rows"], s)
    return finish_gan_stage(profile, s, g, kept, out, res.log["rows"], test_cfg, res.log["init_done"],
                            res.trained_now, (res.log["seconds"], res.log["cpu_seconds"]),
                            property_cnn_path or paths["property_cnn"], evaluator, ctx, female_n, show_progress)


def _write_logs(out: Path, history: list, s: GanSettings) -> None:
    atomic_write_text(out / "train_log.csv", log_rows(history, s.log_every).to_csv(index=True, lineterminator="\n"))
    atomic_write_csv(out / "train_steps.csv", pd.DataFrame(history))


def finish_gan_stage(profile, s, g, kept, out, history, test_cfg, init_done, trained_now, times,
                     property_cnn_path, evaluator_override, ctx, female_n, show_progress) -> dict:
    """Generation test (both judges), female share, metrics.json and report.md."""
    train_seconds, cpu_seconds = times
    g.eval()
    t0 = time.perf_counter()
    cnn = load_property_cnn_for(profile, property_cnn_path).to(ctx.device) if Path(property_cnn_path).is_file() \
        else None
    ev = load_evaluator_for(profile, evaluator_override)
    notes = []
    if cnn is None:
        notes.append(f"property CNN {property_cnn_path} not found: run run_property_score_cnn.py, then re-run this "
                     f"script (it only repeats the test and the report)")
    if ev is None and evaluator_path(profile, evaluator_override) is not None:
        notes.append(f"evaluator weights {evaluator_path(profile, evaluator_override)} not found: the independent "
                     f"judge is missing from this report; re-run once they exist")
    calibration = None
    if ev is not None:
        calibration = evaluator_calibration(ev, kept.images, kept.labels, kept.label_names,
                                            cache_dir=calibration_cache(profile.data_root))
    judges = make_judges(cnn, ev, calibration)
    test = None
    if judges:
        test = run_generation_test(g, judges, out / "generation_test", test_settings_from(test_cfg),
                                   title=f"FineTune-{s.version} generation test", progress=show_progress)
    try:
        gender = load_gender_cnn(profile.stage_dir("stage2"))
    except NetworkInputError as exc:
        gender = None
        notes.append(str(exc))
    with render_plan(g, test_settings_from(test_cfg).inference_path):      # the test's path
        fem = female_share(g, gender, ev, n=female_n, seed=s.seed)
    t_test = time.perf_counter() - t0
    m = {
        "stage": f"5_finetune_{s.version}", "profile": profile.name, "version": s.version,
        "settings": asdict(s), "generation_test_settings": test_cfg, "images": len(kept),
        "label_file": str(kept.label_file), "label_names": list(kept.label_names), "init": init_done,
        "distributed": ctx.describe(), "trained_this_run": trained_now, "epochs_done": s.epochs,
        "steps": len(history), "seeds": {"seed": s.seed, "generation_test_z_seed": test_cfg.get("z_seed", 0)},
        "train_seconds": round(train_seconds, 1), "test_seconds": round(t_test, 1),
        "seconds_per_step": round(train_seconds / max(len(history), 1), 3),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "cpu_seconds_per_step": round(cpu_seconds / max(len(history), 1), 3),
        "g_updates_per_step": _counts(history), "last_epoch": _epoch_means(history, s.epochs - 1),
        "first_epoch": _epoch_means(history, 0), "female_share": fem, "evaluator_calibration": calibration,
        "generation_test": _test_summary(test), "label_path": label_path_strength(g, base_generator_state(profile)[0]),
        "notes": notes, "peak_rss_mb": round(peak_rss_mb(), 1), **install_record(out),
    }
    _report(out, profile, s, m, history, test)
    lineage.close_stage(out, None, m)                # lineage.json, then metrics.json (last)
    return m


def label_path_strength(g, base: dict | None = None) -> dict:
    """How strongly the label reaches w: mean column norm of ``dense0``'s label columns over its z
    columns (stored weights; both share one weight scale), ``label_weight``'s row norms, and how far
    the mapping's weights moved from the base (relative Frobenius norm of the change, z columns)."""
    w = g.mapping.dense0.weight.detach()
    z_dim = g.cfg.z_dim
    zn, ln = w[:, :z_dim].norm(dim=0).mean(), w[:, z_dim:].norm(dim=0).mean()
    out = {"dense0_label_over_z_column_norm": float(ln / zn),
           "label_weight_row_norm_mean": float(g.mapping.label_weight.detach().norm(dim=1).mean())}
    if base is not None:
        num = den = 0.0
        for k, v in g.state_dict().items():
            if k.startswith("mapping.dense") and k.endswith(".weight") and k in base:
                b = base[k].to(v.dtype)
                v = v[:, :b.shape[1]]
                num += float((v - b).pow(2).sum())
                den += float(b.pow(2).sum())
        out["mapping_relative_change"] = (num / den) ** 0.5 if den else None
    return out


def outcome_text(s, m) -> str:
    """A paragraph that explains the control outcome from the run's own numbers."""
    t = m["generation_test"]
    if t is None:
        return "No generation test ran (no judge available)."
    j = t["judges"][t["primary_judge"]]
    r = {p: j["mean"][f"{p}_corr"] for p in P3}
    mae = {p: j["mean"][f"{p}_mae"] for p in P3}
    ratio = m["label_path"]["dense0_label_over_z_column_norm"]
    fem = m["female_share"]["gender_cnn"]["share"] if m["female_share"].get("gender_cnn") else None
    controlled = t["passes"] > 0 and min(r.values()) >= 0.5
    head = ("The labels control the image: " if controlled else
            "Control failed, as it did in the original (spec 04 §2.5, §6): ")
    text = (head + f"{t['passes']} of {t['n_z']} z pass; mean r over the z (judge {t['primary_judge']}) "
            + ", ".join(f"{p} {r[p]:.2f} (MAE {mae[p]:.2f})" for p in P3) + ". ")
    if not controlled:
        text += (f"The label reaches w only through the label columns of `dense0`; after {m['steps']} steps their "
                 f"mean norm is {ratio:.1e} of the z columns' (dense0 '{s.dense0}', mapping lr {s.lr_generator} on "
                 f"weights stored at 1/lr_mul scale), so the 50 labels of one z render almost the same face: MAE "
                 f"stays near the spread of the labels, and r over such tiny changes is noise (its sign and size "
                 f"vary from z to z). The conditional D gives G only a weak reason to use the label: D's real-vs-"
                 f"fake AUROC ended at {m['last_epoch']['real_fake_auroc']:.2f}. ")
    if fem is not None:
        moved = m["label_path"].get("mapping_relative_change")
        text += (f"Female share {fem:.1%} (gender CNN): only the mapping trains"
                 + (f", and its weights moved by {moved:.1e} of their size" if moved is not None else "")
                 + "; the original reached 93.7 % after 39 epochs on 4,703 images.")
    return text


def _counts(history) -> dict:
    c = pd.Series([h["g_train_count"] for h in history]).value_counts().sort_index()
    return {int(k): int(v) for k, v in c.items()}


def _epoch_means(history, epoch) -> dict | None:
    rows = [h for h in history if h["epoch"] == epoch]
    if not rows:
        return None
    df = pd.DataFrame(rows)
    return {k: round(float(df[k].mean()), 4) for k in ("d_loss", "g_loss", "g_train_count", "real_scores_mean",
                                                       "fake_scores_mean", "real_fake_auroc", "r1")}


def _test_summary(test) -> dict | None:
    if test is None:
        return None
    return {"passes": test["passes"], "n_z": test["n_z"], "primary_judge": test["primary_judge"],
            "best_z": test["best_z"], "judges": test["judges"], "folder": "generation_test"}


def loss_figure(history: list, path: Path, title: str) -> Path:
    df = pd.DataFrame(history)
    x = np.arange(len(df))
    w = max(1, len(df) // 50)
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    for k in ("d_loss", "g_loss"):
        axes[0].plot(x, df[k], alpha=0.3)
        axes[0].plot(x, df[k].rolling(w, min_periods=1).mean(), label=k)
    axes[0].set_xlabel("step")
    axes[0].legend(fontsize=7)
    axes[0].set_title("losses (D includes R1)", fontsize=9)
    axes[1].plot(x, df["real_fake_auroc"], alpha=0.3)
    axes[1].plot(x, df["real_fake_auroc"].rolling(w, min_periods=1).mean())
    axes[1].set_ylim(0, 1.02)
    axes[1].set_xlabel("step")
    axes[1].set_title("real-vs-fake AUROC of D", fontsize=9)
    axes[2].plot(x, df["real_scores_mean"].rolling(w, min_periods=1).mean(), label="real")
    axes[2].plot(x, df["fake_scores_mean"].rolling(w, min_periods=1).mean(), label="fake")
    axes[2].set_xlabel("step")
    axes[2].legend(fontsize=7)
    axes[2].set_title("mean D logits", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def _report(out, profile, s, m, history, test) -> None:
    loss_figure(history, out / "report" / "training_curves.png", f"FineTune-{s.version}")
    last = f"grids/epoch_{s.epochs - 1:04d}.png"
    counts = ", ".join(f"{k}: {v}" for k, v in m["g_updates_per_step"].items())
    summary = markdown_table(["item", "value"], [
        ["images / labels", f"{m['images']} / `{Path(m['label_file']).name}` ({', '.join(m['label_names'])})"],
        ["epochs / steps", f"{s.epochs} / {m['steps']} (global batch {s.batch_size}, {m['distributed']['world_size']} "
                           f"process(es))"],
        ["learning rates", f"mapping {s.lr_generator}, label_weight {s.lr_label}, D {s.lr_discriminator}"],
        ["loss", f"logistic, R1 gamma {s.r1_gamma}; G up to {s.g_max_updates} updates while L_G >= {s.g_ratio} L_D"],
        ["fake labels", s.fake_labels + (" (the original's)" if s.fake_labels == "real" else "")],
        ["style mixing / noise", f"p {s.style_mixing_prob} / {'random' if s.randomize_noise else 'stored'}"],
        ["label path start", f"dense0 {s.dense0}, label_weight {s.label_weight}, D head {s.head}"],
        ["G updates per step", counts],
        ["training time", f"{m['train_seconds']} s ({m['seconds_per_step']} s / step; CPU "
                          f"{m['cpu_seconds_per_step']} s / step)"],
    ])
    secs = [("Summary", summary), ("Training curves", "![curves](report/training_curves.png)"),
            ("Last epoch", f"![grid]({last})\n\nLast-epoch means: {m['last_epoch']}"),
            ("Generation test (30 z x 50 labels)", generation_test_table(test)),
            ("Leak and identity", leak_identity_table(test, oracle_reference(profile.data_root))),
            ("Female share", female_table(m["female_share"])),
            ("Outcome", outcome_text(s, m))]
    if m["notes"]:
        secs.append(("Notes", "\n".join(f"- {n}" for n in m["notes"])))
    write_report(out, f"Stage 5 — FineTune-{s.version} ({profile.name})", secs)
