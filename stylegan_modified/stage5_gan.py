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
from tqdm import tqdm

from cnn.property_score_cnn import P3, P7
from pipeline.io import atomic_write_csv, remove_stale_tmp
from pipeline.reports import markdown_table, plt, save_figure, write_metrics, write_report
from pipeline.runtime import peak_rss_mb
from pipeline.shipped import install_record, install_run, shipped_dir

from .conditional import build_discriminator, build_generator
from .distributed import DistContext, epoch_batches, init_distributed
from .finetune_gan import GanSettings, GanTrainer, log_rows
from .generation_test import run_generation_test
from .loading import (init_discriminator_from, init_generator_from, load_discriminator, load_generator,
                      regress_label_path, save_state_dict)
from .stage5_common import (base_discriminator_state, base_generator_state, build_configs, evaluator_calibration,
                            female_share, grid_figure, leak_identity_table, load_state, make_judges,
                            oracle_reference, pack_training_run, save_state, settings_key,
                            shipped_bases, shipped_settings, test_settings_from)
from .stage5_data import (Stage5InputError, evaluator_path, kept_latents, load_evaluator_for, load_gender_cnn,
                          load_kept_set, load_property_cnn_for)

PROPERTY_CNN = "stage5/property_cnn/property_score_cnn.pth"
CNN_LABELS = "stage5/property_cnn/all_scores_v2_cnn.csv"
DEFAULT_LABELS = {"v1": "stage4/all_scores.csv", "v4": CNN_LABELS}
LABEL_NAMES = {"v1": P7, "v4": P3}
# a shipped run (pipeline.shipped): G and D as partial checkpoints against the base, the logs and grids,
# and the training record kept in train_state.pth
GAN_SHIPPED_MODELS = {"generator.pth": "generator", "discriminator.pth": "discriminator"}
GAN_SHIPPED_COPY = ("train_log.csv", "train_steps.csv", "grids/*.png")
GAN_RECORD = ("history", "epoch", "step", "init_done", "seconds", "cpu_seconds")


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
                raise Stage5InputError(f"v4 starts from the finished FineTune-v1: {Path(init_dir) / name} not found; "
                                       f"run run_stylegan_fine_tuning_v1.py first (or pass --init-dir)")
        g_state = load_generator(Path(init_dir) / "generator.pth", gcfg, "v1").state_dict()
        d_state = load_discriminator(Path(init_dir) / "discriminator.pth", dcfg, "v1").state_dict()
        g_src, d_src, src_spec = str(Path(init_dir) / "generator.pth"), str(Path(init_dir) / "discriminator.pth"), "v1"
    done = {"generator_source": g_src, "discriminator_source": d_src,
            **init_generator_from(g, g_state, source_spec=src_spec, dense0="keep" if s.dense0 == "regress" else s.dense0,
                                  label_weight=s.label_weight),
            **init_discriminator_from(d, d_state, source_spec=src_spec, head=s.head)}
    if s.dense0 == "regress":
        done.update(regress_label_path(g, kept_latents(profile, kept.img_nos), kept.labels,
                                       [n for n in s.regress_labels.split(",") if n in g.label_names], seed=s.seed))
    return g, d, done


def run_gan_stage(profile, s: GanSettings, test_cfg: dict, out_dir: Path | None = None,
                  label_file: Path | None = None, property_cnn_path: Path | None = None,
                  init_dir: Path | None = None, evaluator: str | None = None, ctx: DistContext | None = None,
                  female_n: int = 300, show_progress: bool = True) -> dict | None:
    """Train (or resume, or skip when finished), then test and report on the main process."""
    s.validate()
    ctx = ctx or init_distributed()
    paths = default_paths(profile, s.version)
    out = Path(out_dir) if out_dir else paths["out"]
    label_file = Path(label_file) if label_file else paths["labels"]
    kept = load_kept_set(profile, label_file, LABEL_NAMES[s.version], show_progress=show_progress and ctx.is_main)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(out)
    ctx.barrier()
    key = {**settings_key(s), "labels": str(label_file), "images": len(kept)}
    state = load_state(out / "train_state.pth", key)
    shipped = None
    if state is None and ctx.world == 1:
        shipped = install_run(shipped_dir(profile, s.version), out, shipped_settings(profile, key, s, kept.img_nos),
                              lambda: shipped_bases(profile, GAN_SHIPPED_MODELS), img_nos=kept.img_nos)
    g, d, init_done = start_models(profile, s, Path(init_dir) if init_dir else paths["init"], kept)
    g.to(ctx.device)
    d.to(ctx.device)
    trainer = GanTrainer(g, d, kept.labels, s, ctx)
    history, epoch, step, seconds, cpu = [], 0, 0, 0.0, 0.0
    if shipped is not None:
        gcfg, dcfg = build_configs(profile)
        g.load_state_dict(load_generator(out / "generator.pth", gcfg, s.version).state_dict())
        d.load_state_dict(load_discriminator(out / "discriminator.pth", dcfg, s.version).state_dict())
    elif state is not None:
        trainer.load(state)
    if state is not None or shipped is not None:
        state = state if shipped is None else shipped
        history, epoch, step = list(state["history"]), int(state["epoch"]), int(state["step"])
        seconds, cpu = float(state["seconds"]), float(state.get("cpu_seconds", 0.0))
        init_done = state.get("init_done", init_done)
    trained_now = epoch < s.epochs
    t_run, c_run = time.perf_counter(), time.process_time()

    def snapshot(e, k):
        if ctx.is_main:
            save_state(out / "train_state.pth", {**trainer.state(), "settings_json": _json(key), "history": history,
                                                 "epoch": e, "step": k, "init_done": init_done,
                                                 "seconds": seconds + time.perf_counter() - t_run,
                                                 "cpu_seconds": cpu + time.process_time() - c_run})
        ctx.barrier()

    while epoch < s.epochs:
        batches = epoch_batches(len(kept), s.batch_size, s.seed, epoch, ctx, drop_last=s.drop_last)
        if s.max_steps_per_epoch:
            batches = batches[:s.max_steps_per_epoch]
        bar = tqdm(total=len(batches), initial=step, desc=f"{s.version} epoch {epoch}",
                   disable=not (show_progress and ctx.is_main))
        while step < len(batches):
            x, y = kept.batch(batches[step])
            row = trainer.train_step(x.to(ctx.device), y.to(ctx.device), epoch, step)
            history.append(row)
            step += 1
            bar.update(1)
            bar.set_postfix(d=f"{row['d_loss']:.3f}", g=f"{row['g_loss']:.3f}", n=row["g_train_count"],
                            auc=f"{row['real_fake_auroc']:.3f}")
            if step % s.checkpoint_every == 0 and step < len(batches):
                snapshot(epoch, step)
        bar.close()
        if ctx.is_main:
            ck = out / "checkpoints"
            save_state_dict(g, ck / f"epoch_{epoch:04d}_gen.pth")
            save_state_dict(d, ck / f"epoch_{epoch:04d}_dis.pth")
            grid_figure(g, out / "grids" / f"epoch_{epoch:04d}.png", s.grid_z, s.seed,
                        f"{s.version} after epoch {epoch}: 10 z x the 7 monitoring labels")
            _write_logs(out, history, s)
        epoch, step = epoch + 1, 0
        snapshot(epoch, 0)
    if not ctx.is_main:
        return None
    if trained_now or not (out / "generator.pth").is_file():
        save_state_dict(g, out / "generator.pth")
        save_state_dict(d, out / "discriminator.pth")
    train_seconds = seconds + (time.perf_counter() - t_run if trained_now else 0.0)
    cpu_seconds = cpu + (time.process_time() - c_run if trained_now else 0.0)
    _write_logs(out, history, s)
    return finish_gan_stage(profile, s, g, kept, out, history, test_cfg, init_done, trained_now,
                            (train_seconds, cpu_seconds), property_cnn_path or paths["property_cnn"], evaluator, ctx,
                            female_n, show_progress)


def _json(d: dict) -> str:
    import json
    return json.dumps(d, sort_keys=True)


def _write_logs(out: Path, history: list, s: GanSettings) -> None:
    from pipeline.io import atomic_write_text
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
        calibration = evaluator_calibration(ev, kept.images, kept.labels, kept.label_names)
    judges = make_judges(cnn, ev, calibration)
    test = None
    if judges:
        test = run_generation_test(g, judges, out / "generation_test", test_settings_from(test_cfg),
                                   title=f"FineTune-{s.version} generation test", progress=show_progress)
    try:
        gender = load_gender_cnn(profile)
    except Stage5InputError as exc:
        gender = None
        notes.append(str(exc))
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
    write_metrics(out, m)
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


def test_table(test: dict | None) -> str:
    if test is None:
        return "No judge available: the generation test did not run."
    rows = []
    for name, summ in test["judges"].items():
        rows.append([name, f"{summ['passes']} / {test['n_z']}"]
                    + [f"{summ['mean'][f'{p}_corr']:.3f} / {summ['best'][f'{p}_corr']:.3f}" for p in P3]
                    + [f"{summ['mean'][f'{p}_mae']:.3f}" for p in P3])
    return (markdown_table(["judge", "passes"] + [f"{p} r mean / best" for p in P3] + [f"{p} MAE mean" for p in P3],
                           rows) + "\n\nFull report: [generation_test/report.md](generation_test/report.md)")


def female_table(fem: dict) -> str:
    rows = [[k, f"{v['share']:.1%}", f"{v['mean_probability']:.3f}"] for k, v in fem.items() if isinstance(v, dict)]
    return (f"{fem['n']} random outputs (z: {fem['z']}; labels {fem['labels']}):\n\n"
            + markdown_table(["judge", "female share", "mean probability"], rows))


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
            ("Generation test (30 z x 50 labels)", test_table(test)),
            ("Leak and identity", leak_identity_table(test, oracle_reference(profile))),
            ("Female share", female_table(m["female_share"])),
            ("Outcome", outcome_text(s, m))]
    if m["notes"]:
        secs.append(("Notes", "\n".join(f"- {n}" for n in m["notes"])))
    write_report(out, f"Stage 5 — FineTune-{s.version} ({profile.name})", secs)


def pack_gan_run(profile, version: str = "v1", run_dir: Path | None = None, dest: Path | None = None) -> dict:
    """Pack the finished FineTune-v1 / v4 run into the profile's shipped folder (``pipeline.shipped``)."""
    return pack_training_run(profile, Path(run_dir) if run_dir else default_paths(profile, version)["out"],
                             Path(dest) if dest else shipped_dir(profile, version), f"FineTune-{version}",
                             GanSettings, LABEL_NAMES[version], GAN_RECORD, GAN_SHIPPED_MODELS, GAN_SHIPPED_COPY)
