"""Stage 5c: the FineTune-v3 stage (entry point ``run_stylegan_fine_tuning_v3.py``).

Inputs: the kept images with the property CNN's labels (``stage5/property_cnn/all_scores_v2_cnn.csv``,
P7), the property CNN itself (frozen loss network and primary judge), the stage-2 gender fold
models, and the starting generator (the finished v1 ``stage5/v1/generator.pth``, or the base).

Per epoch (:mod:`training.loop` with :class:`training.cvae.V3Trainer`): train, then the generation test on 30 latents
(default: the posteriors of 30 seeded training images at the epoch's end, one seeded draw each;
``test_z_source='last_batches'`` = the original's first samples of the epoch's last 30
batches) x 50 labels, judged by the property CNN in eval mode and, on synthface, the
independent evaluator. An epoch in which at least one latent passes the six thresholds gets
``checkpoints/epoch_EEEE_{gen,enc}.pth`` and ``test_z_EEEE.csv``; the best epoch so far (most
passing latents, then the highest mean r) is also written as ``generator.pth``,
``encoder.pth``, ``test_z.csv`` (its 30 latents), ``test_z_vector.csv`` (its best latent) and
``best.json``. ``train_log_v3.csv``: the original's columns (batch rows and one ``-`` summary
row per epoch). Resumable (``train_state.pth``); a finished run only re-tests the best
checkpoint and reports.
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from evaluation.generation import render_plan, run_generation_test
from evaluation.generation import settings_from as test_settings_from
from evaluation.judges import calibration_cache, evaluator_calibration, make_judges, parsing_judge
from evaluation.networks import evaluator_path, load_evaluator_for, load_gender_cnn, load_property_cnn_for
from evaluation.tables import (female_share, female_table, generation_test_table, leak_identity_table,
                               oracle_reference)
from pipeline.checkpoint import load_state_dict_strict, read_checkpoint
from pipeline.io import InputError, atomic_write_text, remove_stale_tmp
from pipeline import lineage
from pipeline.reports import markdown_table, plt, save_figure, write_report
from pipeline.runtime import peak_rss_mb
from pipeline.shipped import install_record, run_settings, shipped_dir
from pipeline.vocabulary import CONTROLLED as P3
from pipeline.vocabulary import PROPERTIES as P7
from stylegan.sampling import latent_z
from stylegan_modified.conditional import build_generator
from stylegan_modified.cvae import CVAEEncoder, FineTuneV3, encode, z_candidates_from_posterior
from stylegan_modified.distributed import DistContext, init_distributed
from stylegan_modified.loading import init_generator_from, load_generator, regress_label_path
from training.cvae import LOG_COLUMNS, V3Settings, V3Trainer
from training.loop import Evaluation, FineTuneLoop, LoopSettings, ShippedRun, settings_key

from .bases import (base_generator_state, build_configs, kept_set_of, latents_of, shipped_bases,
                    restart_hint, upstream_records)
from .finetune_gan import CNN_LABELS, PROPERTY_CNN
from .settings import (distributed, prepare_runtime, profile_of, resolve_stage, settings_of, summary_text,
                       write_settings)

N_TEST_Z = 30
# a shipped run (pipeline.shipped): G as a partial checkpoint against the base G (only the mapping
# trains), the encoder, the best epoch's latents and the logs, and the training record
V3_SHIPPED_MODELS = {"generator.pth": "generator"}
V3_SHIPPED_COPY = ("encoder.pth", "test_z.csv", "test_z_vector.csv", "test_z_*.csv", "best.json", "train_log_v3.csv")


def default_paths(profile) -> dict:
    root = profile.data_root
    return {"out": root / "stage5" / "v3", "labels": root / CNN_LABELS, "property_cnn": root / PROPERTY_CNN,
            "init": root / "stage5" / "v1"}


def start_generator(profile, s: V3Settings, init_dir: Path, kept=None):
    """G_v3 from v1 or the base; ``dense0='regress'`` then sets the label path from the kept set."""
    gcfg, _ = build_configs(profile)
    g = build_generator(gcfg, "v3", seed=s.seed)
    if s.init_from == "v1":
        path = Path(init_dir) / "generator.pth"
        if not path.is_file():
            raise InputError(f"v3 starts from the finished FineTune-v1: {path} not found; run "
                                   f"run_stylegan_fine_tuning_v1.py first, or pass --init-from base")
        state, src, spec = load_generator(path, gcfg, "v1").state_dict(), str(path), "v1"
    else:
        state, src = base_generator_state(profile)
        spec = None
    done = {"generator_source": src, **init_generator_from(g, state, source_spec=spec,
                                                           dense0="reinit" if s.dense0 == "reinit" else "keep",
                                                           label_weight="fresh")}
    if s.dense0 == "regress":
        done.update(regress_label_path(g, latents_of(profile, kept.img_nos), kept.labels,
                                       [n for n in s.regress_labels.split(",") if n in g.label_names], seed=s.seed))
    return g, done


def posterior_test_images(n: int, seed: int) -> np.ndarray:
    """Indices of the training images whose posteriors give the test latents (fixed over epochs)."""
    rng = np.random.default_rng([int(seed), 61])
    return np.sort(rng.choice(n, size=min(N_TEST_Z, n), replace=False))


def epoch_test_latents(s: V3Settings, model: FineTuneV3, kept, epoch: int, last_posteriors: list,
                       n_z: int) -> tuple:
    """(z [n_z, z_dim], mu, logvar, description) for the epoch's test (see the module docstring)."""
    enc = model.CVAE_encoder
    dev = next(enc.parameters()).device
    if s.test_z_source == "prior":
        z = latent_z(range(n_z), enc.z_dim, s.seed + 700)
        return z, None, None, f"seeded N(0, I) (latent_z seed {s.seed + 700})"
    if s.test_z_source == "last_batches":
        if not last_posteriors:
            raise RuntimeError("test_z_source 'last_batches' needs the posteriors of the epoch's batches "
                               "(not kept across a resume in the middle of the test)")
        mu = torch.cat([m for m, _ in last_posteriors[-n_z:]])
        logvar = torch.cat([lv for _, lv in last_posteriors[-n_z:]])
        what = f"first sample of each of the epoch's last {len(mu)} batches (the original)"
    else:
        idx = posterior_test_images(len(kept), s.seed)[:n_z]
        x, y = kept.batch(idx)
        mu, logvar = encode(enc, x.to(dev), y.to(dev))
        what = f"posteriors of {len(idx)} seeded training images (img_no {', '.join(str(int(v)) for v in kept.img_nos[idx[:5]])}, ...)"
    z = z_candidates_from_posterior(mu.cpu(), logvar.cpu(), seed=int(s.seed) * 1000 + int(epoch))
    return z.numpy(), mu.cpu().numpy(), logvar.cpu().numpy(), what + ", one seeded draw each"


def _score(test: dict, judge: str | None = None) -> tuple:
    """(passing z, mean r over eyes / mouth / pose) by ``judge`` (default: the primary one)."""
    summ = test["judges"][judge or test["primary_judge"]]
    return (summ["passes"], float(np.mean([summ["mean"][f"{p}_corr"] for p in P3])))


def main(profile_name: str, consts: dict, args=None, paths: dict | None = None) -> dict | None:
    """The stage from a script: settings = constants < profile ``stage5.v3`` < flags, recorded in
    ``run_config.json``; then :func:`run_v3_stage`; prints the outcome."""
    profile = profile_of(profile_name)
    cfg = resolve_stage(consts, profile, "stage5.v3", args)
    s = settings_of(V3Settings, cfg.settings.values)
    paths = dict(paths or {})
    upstream_records(profile, Path(paths.get("labels") or default_paths(profile)["labels"]))   # before writing
    write_settings(Path(paths.get("out") or default_paths(profile)["out"]), cfg)
    test = dict(cfg.test.values)
    female_n = prepare_runtime(profile, s, test, cfg.runtime)
    with distributed(cfg.runtime) as ctx:
        m = run_v3_stage(profile, s, test, out_dir=paths.get("out"), label_file=paths.get("labels"),
                          property_cnn_path=paths.get("property_cnn"), init_dir=paths.get("init_dir"),
                          evaluator=paths.get("evaluator"), ctx=ctx, female_n=female_n,
                          show_progress=bool(cfg.runtime.get("progress", True)))
    if m is not None:
        print(summary_text(f"FineTune-v3: shipped epoch {m['best']['epoch']}; passing epochs {m['passing_epochs']}",
                           m["generation_test_best"]))
    return m


def key_test_settings(test_cfg: dict) -> dict:
    """The generation-test settings in the run's key: the per-epoch tests choose the shipped epoch, so
    they are the run's; they render on the exact path, and the re-test of the chosen checkpoint
    (:func:`finish_v3_stage`) on the test's own ``inference_path``, which is therefore not in the key."""
    return {k: v for k, v in test_cfg.items() if k != "inference_path"}


def run_v3_stage(profile, s: V3Settings, test_cfg: dict, out_dir: Path | None = None, label_file: Path | None = None,
                 property_cnn_path: Path | None = None, init_dir: Path | None = None, evaluator: str | None = None,
                 ctx: DistContext | None = None, female_n: int = 300, show_progress: bool = True) -> dict | None:
    """Train with a generation test per epoch (or resume, install the shipped run, or skip when
    finished), then re-test the best epoch and report on the main process."""
    s.validate()
    ctx = ctx or init_distributed()
    paths = default_paths(profile)
    out = Path(out_dir) if out_dir else paths["out"]
    label_file = Path(label_file) if label_file else paths["labels"]
    cnn_path = Path(property_cnn_path) if property_cnn_path else paths["property_cnn"]
    kept = kept_set_of(profile, label_file, P7, show_progress=show_progress and ctx.is_main)
    cnn = load_property_cnn_for(profile, cnn_path).to(ctx.device)
    gender = load_gender_cnn(profile.stage_dir("stage2"), s.gender_folds).to(ctx.device)
    consumed = upstream_records(profile, label_file)        # upstream stages complete and unchanged
    if ctx.is_main:
        lineage.begin(out, consumed, restart_hint(out))      # a run trained on other inputs is refused
        remove_stale_tmp(out)
    ctx.barrier()
    key = {**settings_key(s), "labels": str(label_file), "images": len(kept), "test": key_test_settings(test_cfg)}
    g, init_done = start_generator(profile, s, Path(init_dir) if init_dir else paths["init"], kept)
    with torch.random.fork_rng():
        torch.manual_seed(int(s.seed) + 17)
        enc = CVAEEncoder(int(profile["resolution"]), len(P7), g.cfg.z_dim)
    model = FineTuneV3(enc, g, cnn, gender, gender_input=s.gender_input).to(ctx.device)
    trainer = V3Trainer(model, kept.labels, s, ctx)
    loop = FineTuneLoop(trainer, kept, out, LoopSettings("v3", s.epochs, s.batch_size, s.seed, s.checkpoint_every,
                                                         s.max_steps_per_epoch), key, ctx, show_progress)
    loop.start(init_done, ShippedRun(shipped_dir(profile, "v3"),
                                     run_settings(profile.data_root, key, s.epochs, kept.img_nos),
                                     lambda: shipped_bases(profile, V3_SHIPPED_MODELS), kept.img_nos))
    ev = load_evaluator_for(profile, evaluator) if ctx.is_main else None
    calibration = (evaluator_calibration(ev, kept.images, kept.labels, P7,
                                         cache_dir=calibration_cache(profile.data_root)) if ev is not None else None)
    judges = make_judges(cnn, ev, calibration, dropout=s.test_dropout, dropout_seed=s.seed)
    select_name = None
    if s.select_judge == "parsing" and ctx.is_main:
        judges.append(parsing_judge(profile))
        select_name = judges[-1].name
    tsettings = test_settings_from(test_cfg)

    def evaluate(epoch: int) -> Evaluation:
        """The epoch's generation test on its test latents; the score chooses the shipped epoch."""
        z, mu, logvar, what = epoch_test_latents(s, model, kept, epoch, trainer.last_posteriors, int(tsettings.n_z))
        tdir = out / "generation_test" / f"epoch_{epoch:04d}"
        test = run_generation_test(g, judges, tdir, replace(tsettings, inference_path="exact"), z=z,
                                   epoch=epoch, title="FineTune-v3 generation test", progress=False)
        score = _score(test, select_name)
        entry = {"epoch": epoch, "passes": test["passes"], "z_source": what, "best_z": test["best_z"],
                 "score": list(score), "selected_by": select_name or test["primary_judge"],
                 "judges": {n: {"passes": j["passes"], **{f"{p}_corr_mean": j["mean"][f"{p}_corr"] for p in P3}}
                            for n, j in test["judges"].items()}}
        if mu is not None:
            _posterior_csvs(tdir, mu, logvar)
        _write_log(out, loop.log)
        print(f"v3 epoch {epoch}: {test['passes']}/{test['n_z']} z pass; "
              + "; ".join(f"{n} r " + "/".join(f"{j[p + '_corr_mean']:.3f}" for p in P3)
                          for n, j in entry["judges"].items()), flush=True)
        passed = test["passes"] > 0
        return Evaluation(entry, score, keep_snapshot=passed,
                          files={f"test_z_{epoch:04d}.csv": z} if passed else {},
                          best_files={"test_z.csv": z, "test_z_vector.csv": z[test["best_z"]:test["best_z"] + 1]},
                          best_extra={"test_dir": str(tdir.relative_to(out))})

    res = loop.run(evaluate)
    if not ctx.is_main:
        return None
    return finish_v3_stage(profile, s, model, kept, out, res.log, judges, tsettings, test_cfg, res.trained_now, ctx,
                           female_n, evaluator, ev, show_progress)


def _posterior_csvs(tdir: Path, mu: np.ndarray, logvar: np.ndarray) -> None:
    for name, a in (("test_mus.csv", mu), ("test_log_vars.csv", logvar)):
        atomic_write_text(tdir / name, pd.DataFrame(np.round(a, 4)).to_csv(index=False, lineterminator="\n"))


def _write_log(out: Path, hist: dict) -> None:
    batch_rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k != "n"}
                  for r in hist["rows"] if r["batch_idx"] % 20 == 0 or (r["epoch"] == 0 and r["batch_idx"] < 20)]
    rows = []
    for e in sorted({r["epoch"] for r in hist["rows"]}):
        rows += [r for r in batch_rows if r["epoch"] == e]
        rows += [{k: (round(v, 4) if isinstance(v, float) and k != "total_loss" else v) for k, v in er.items()}
                 for er in hist["epoch_rows"] if er["epoch"] == e]
    cols = LOG_COLUMNS + [c for c in ("reconstruction_loss", "kl_loss", "identity_loss")
                          if any(c in r for r in rows)]
    atomic_write_text(out / "train_log_v3.csv", pd.DataFrame(rows, columns=cols).to_csv(index=False,
                                                                                           lineterminator="\n"))


def finish_v3_stage(profile, s, model, kept, out, hist, judges, tsettings, test_cfg, trained_now, ctx, female_n,
                    evaluator_override, ev, show_progress) -> dict:
    """Re-test the best checkpoint (the shipped model), female share, metrics.json, report.md."""
    gcfg = model.stylegan_generator.cfg
    g_best = load_generator(out / "generator.pth", gcfg, "v3").to(ctx.device)
    z_best = pd.read_csv(out / "test_z.csv").to_numpy(np.float32)
    t0 = time.perf_counter()
    final = run_generation_test(g_best, judges, out / "generation_test_best", tsettings, z=z_best,
                                title=f"FineTune-v3 shipped checkpoint (epoch {hist['best']['epoch']})",
                                progress=show_progress)
    notes = []
    if ev is None and evaluator_path(profile, evaluator_override) is not None:
        notes.append(f"evaluator weights {evaluator_path(profile, evaluator_override)} not found: the independent "
                     f"judge is missing; re-run once they exist (only the test and the report are repeated)")
    with render_plan(g_best, tsettings.inference_path):                  # the test's path
        fem_prior = female_share(g_best, model.gender_cnn, ev, n=female_n, seed=s.seed)
    enc_best = CVAEEncoder(int(profile["resolution"]), len(P7), gcfg.z_dim)
    load_state_dict_strict(enc_best, read_checkpoint(out / "encoder.pth"), what=f"encoder {out / 'encoder.pth'}")
    idx = np.random.default_rng([s.seed, 62]).choice(len(kept), size=min(female_n, len(kept)), replace=False)
    x, y = kept.batch(np.sort(idx))
    mu, logvar = encode(enc_best.to(ctx.device), x.to(ctx.device), y.to(ctx.device), batch_size=50)
    zp = z_candidates_from_posterior(mu.cpu(), logvar.cpu(), seed=s.seed + 5).numpy()
    with render_plan(g_best, tsettings.inference_path):
        fem_post = female_share(g_best, model.gender_cnn, ev, z=zp, seed=s.seed,
                                z_source=f"posteriors of {len(zp)} seeded training images, one draw each")
    t_test = time.perf_counter() - t0
    m = {
        "stage": "5_finetune_v3", "profile": profile.name, "settings": asdict(s), "generation_test_settings": test_cfg,
        "images": len(kept), "label_file": str(kept.label_file), "init": hist["init_done"],
        "distributed": ctx.describe(), "trained_this_run": trained_now, "epochs_done": s.epochs,
        "steps": len(hist["rows"]), "seeds": {"seed": s.seed, "generation_test_z_seed": test_cfg.get("z_seed", 0)},
        "train_seconds": round(hist["seconds"], 1), "test_seconds_per_epoch": round(hist["test_seconds"]
                                                                                    / max(len(hist["tests"]), 1), 1),
        "seconds_per_step": round(hist["seconds"] / max(len(hist["rows"]), 1), 3),
        "cpu_seconds_per_step": round(hist.get("cpu_seconds", 0.0) / max(len(hist["rows"]), 1), 3),
        "epochs": hist["epoch_rows"], "tests": hist["tests"], "best": hist["best"],
        "passing_epochs": [t["epoch"] for t in hist["tests"] if t["passes"] > 0],
        "shipped": {"generator": "generator.pth", "encoder": "encoder.pth", "test_z": "test_z.csv",
                    "test_z_vector": "test_z_vector.csv", "epoch": hist["best"]["epoch"]},
        "generation_test_best": {"passes": final["passes"], "n_z": final["n_z"], "best_z": final["best_z"],
                                 "judges": final["judges"], "folder": "generation_test_best",
                                 "seconds": round(t_test, 1)},
        "female_share": {"prior_z": fem_prior, "posterior_z": fem_post}, "evaluator_calibration":
            next((j.calibration for j in judges if hasattr(j, "calibration")), None),
        "notes": notes, "peak_rss_mb": round(peak_rss_mb(), 1), **install_record(out),
    }
    _report(out, profile, s, m, hist, final)
    lineage.close_stage(out, None, m)                # lineage.json, then metrics.json (last)
    return m


def _report(out: Path, profile, s: V3Settings, m: dict, hist: dict, final: dict) -> None:
    er = pd.DataFrame(hist["epoch_rows"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    for k in ("total_loss", "mse", "gender_loss", "mu_loss", "logvar_loss", "reconstruction_loss", "kl_loss",
              "identity_loss"):
        if k in er:
            axes[0].plot(er["epoch"], er[k], marker="o", label=k)
    axes[0].set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    axes[0].set_title("epoch-mean losses", fontsize=9)
    tests = pd.DataFrame([{"epoch": t["epoch"], **{f"{n} {p}": j[f"{p}_corr_mean"] for n, j in t["judges"].items()
                                                   for p in P3}} for t in hist["tests"]])
    for c in tests.columns[1:]:
        axes[1].plot(tests["epoch"], tests[c], marker="o", ls="-" if c.startswith("property_cnn") else "--", label=c)
    axes[1].set_xlabel("epoch")
    axes[1].set_title("generation test: mean r over the 30 z", fontsize=9)
    axes[1].legend(fontsize=6)
    axes[2].bar([t["epoch"] for t in hist["tests"]], [t["passes"] for t in hist["tests"]])
    axes[2].set_xlabel("epoch")
    axes[2].set_title("passing z per epoch (property CNN)", fontsize=9)
    save_figure(fig, out / "report" / "training_curves.png")
    b = m["best"]
    fem = m["female_share"]
    summary = markdown_table(["item", "value"], [
        ["images", m["images"]],
        ["epochs / steps", f"{s.epochs} / {m['steps']} (global batch {s.batch_size}, "
                           f"{m['distributed']['world_size']} process(es))"],
        ["loss", f"{s.weight_property} C + {s.weight_gender} G + {s.weight_mu} M + {s.weight_logvar} V"
                 + (f" + {s.weight_reconstruction} reconstruction + {s.weight_kl} KL" if s.reconstruction else "")
                 + (f" + {s.identity_weight} identity" if s.identity_weight else "")],
        ["learning rates", f"mapping {s.lr_generator}, label_weight {s.lr_label}, encoder {s.lr_encoder}; "
                           f"cosine T_max {s.t_max}"],
        ["generator labels", f"{s.gen_labels} (p {s.gen_label_prob})" if s.gen_labels != "image"
         else "the image's own (the original)"],
        ["loss networks", f"property CNN {s.loss_cnn_mode} mode; gender CNN {s.gender_folds}, input "
                          f"{'[0, 1]' if s.gender_input == 'unit' else '[-1, 1] (the original)'}"],
        ["start", f"{s.init_from}, dense0 {s.dense0}"],
        ["test latents", b["z_source"]],
        ["passing epochs", ", ".join(map(str, m["passing_epochs"])) or "none"],
        ["shipped checkpoint", f"epoch {b['epoch']} ({b['passes']} passing z by the property CNN; best z "
                               f"{b['best_z']}); chosen by most passing z, then mean r, of judge "
                               f"'{b.get('selected_by', 'property_cnn')}'"
                               + (" (stages 3-4: the generator never trained against it)"
                                  if b.get("selected_by") == "parsing" else "")],
        ["training time", f"{m['train_seconds']} s ({m['seconds_per_step']} s / step, CPU "
                          f"{m['cpu_seconds_per_step']} s / step); test "
                          f"{m['test_seconds_per_epoch']} s / epoch"],
    ])
    secs = [("Summary", summary), ("Training", "![curves](report/training_curves.png)"),
            ("Shipped checkpoint: generation test (30 z x 50 labels)", generation_test_table(final).replace(
                "generation_test/report.md", "generation_test_best/report.md")),
            ("Leak and identity (shipped checkpoint)", leak_identity_table(final, oracle_reference(profile.data_root))),
            ("Female share (prior z)", female_table(fem["prior_z"])),
            ("Female share (posterior z of training images)", female_table(fem["posterior_z"]))]
    if m["notes"]:
        secs.append(("Notes", "\n".join(f"- {n}" for n in m["notes"])))
    write_report(out, f"Stage 5 — FineTune-v3 ({profile.name})", secs)
