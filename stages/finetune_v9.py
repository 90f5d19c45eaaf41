"""Stage 6: StyleGAN-FineTune-v9 (entry point ``run_stylegan_finetune_v9.py``; spec 02 §2, 02a).

Inputs: the stage-2 kept set (``stage2/filtered/``, trained on with zero labels, as the original),
the stage-2 fold models of gender / quality / age / glasses (monitoring, and the regressed start),
and the finished FineTune-v1 of stage 5 (``stage5/v1/generator.pth``, ``discriminator.pth``; the
v1 → v9 load allows exactly the four ``dense_new*`` keys to be missing, D loads strictly).

Outputs (``<data root>/stage6/v9/``), on the one fine-tune loop (:mod:`training.loop`) with
:class:`training.v9.V9Trainer`:

* ``train_log.csv`` (the original's columns exactly, 02a §D), ``concept_log.csv`` (the stage-2 CNN
  means beside the independent evaluator's shares, per log point), ``train_steps.csv`` (every step),
  ``inference_test_during_finetuning/epoch_EEEE_idx_IIII/inference_test_result.csv``;
* ``grids/epoch_EEEE.png`` (10 z x the 7 monitoring labels), ``checkpoints/epoch_EEEE_{gen,dis}.pth``,
  the resumable ``train_state.pth``, the finished ``generator.pth`` / ``discriminator.pth``;
* ``acceptance.json`` (:mod:`evaluation.v9_acceptance`: 1,000 random outputs of base G, v1 and v9
  judged by the evaluator and the stage-2 CNNs, stds, Fréchet distances, branch use),
  ``lineage.json``, ``run_config.json``, ``metrics.json``, ``report.md`` (:mod:`stages.finetune_v9_report`).

A finished run only re-tests and reports; a fresh data root installs the shipped run
(``stage6.shipped``, a partial checkpoint against the local v1) when its settings and v1 match.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from evaluation.grids import grid_figure
from evaluation.networks import evaluator_path, load_evaluator_for
from evaluation.v9_acceptance import acceptance
from pipeline import lineage
from pipeline.checkpoint import CheckpointError, read_checkpoint
from pipeline.config import check_value
from pipeline.io import InputError, atomic_write_csv, atomic_write_json, remove_stale_tmp
from pipeline.kept_set import KeptSet, list_filtered, load_images
from pipeline.reports import write_metrics
from pipeline.runtime import peak_rss_mb
from pipeline.shipped import install_record, pack_run, run_settings
from pipeline.vocabulary import FILTER_PROPERTIES
from stylegan_modified.distributed import DistContext, init_distributed
from stylegan_modified.loading import load_generator
from stylegan_modified.v9 import (branch_stats, build_v9_generator, drop_label_input, init_v9_from_v1,
                                  load_v9_discriminator)
from training.loop import STATE_FILE, FineTuneLoop, LoopSettings, ShippedRun, settings_key
from training.v9 import MonitorSettings, V9Monitor, V9Settings, V9Trainer, load_monitor_cnns
from training.v9_start import regressed_start

from .bases import base_generator_state, build_configs
from .finetune_v9_report import write_v9_report
from .settings import distributed, given_flags, profile_of, resolve_stage, settings_of, write_settings

OUT = "stage6/v9"
V1_DIR = "stage5/v1"
SHIPPED_MODELS = ("generator.pth", "discriminator.pth")
SHIPPED_COPY = ("train_log.csv", "concept_log.csv", "train_steps.csv")    # grids stay out: the size budget
SPEC_FILTER = {"gender": (">=", 0.92), "quality": (">=", 0.9), "age": ("<=", 0.008), "glass": ("<=", 0.01)}
FILTER_KEYS = {"gender": "gender_min", "quality": "quality_min", "age": "age_max", "glass": "glass_max"}
RUNTIME_KEYS = ("device", "threads", "progress", "quick", "shipped", "acceptance_n")


@dataclass
class V9StageSettings(V9Settings):
    """The stage's settings (the script's constants; the profile's ``stage6.v9`` block overrides them):
    the trainer's (``training.v9.V9Settings``) plus the stage's own below."""
    epochs: int = 2
    start: str = "original"              # "original" (N(0, 0.15²) new branch) or "regress" (training.v9_start)
    regress_judged: int = 1000
    regress_samples: int = 20000
    regress_margin: float = 1.0
    regress_margin_glass: float = 0.0    # glasses' own margin (0: regress_margin)
    regress_margin_age: float = 0.0      # age's own margin (0: regress_margin)
    regress_conditional: str = ""        # comma-separated properties with conditional directions ("glass")
    regress_widen: float = 1.0           # spread of the shifted w off the concept directions (1: as shifted)
    drop_labels: bool = False            # zero v1's label_weight: the label no longer reaches the mapping (a deviation)
    monitor_images: int = 100
    monitor_jpeg_quality: int = 95       # 0: score the in-memory images
    monitor_cnn_train_mode: bool = False
    checkpoint_every: int = 50
    max_steps_per_epoch: int | None = None
    drop_last: bool = False
    grid_z: int = 10

    def validate(self) -> None:
        if self.start not in ("original", "regress"):
            raise ValueError(f"start must be 'original' or 'regress', got {self.start!r}")
        bad = sorted(set(self.conditional()) - set(SPEC_FILTER))
        if bad:
            raise ValueError(f"regress_conditional names unknown properties {bad} (known: {sorted(SPEC_FILTER)})")
        if self.regress_margin_glass < 0 or self.regress_margin_age < 0:
            raise ValueError("regress_margin_glass / regress_margin_age must be >= 0 (0: regress_margin)")
        if not self.regress_widen > 0:
            raise ValueError(f"regress_widen must be > 0 (1: off), got {self.regress_widen}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        self.trainer().validate()

    def conditional(self) -> tuple:
        return tuple(q.strip() for q in str(self.regress_conditional or "").split(",") if q.strip())

    def trainer(self) -> V9Settings:
        names = {f.name for f in fields(V9Settings)}
        return V9Settings(**{k: v for k, v in asdict(self).items() if k in names})

    def monitor(self) -> MonitorSettings:
        return MonitorSettings(n_images=self.monitor_images, jpeg_quality=self.monitor_jpeg_quality or None,
                               cnn_train_mode=self.monitor_cnn_train_mode, seed=self.seed)


def run_key(s: "V9StageSettings") -> dict:
    """The settings a re-run / shipped run must share; ``regress_margin_glass`` / ``_age``, ``regress_conditional``,
    ``regress_widen`` and ``drop_labels`` only when set, so runs made before they existed still match at their defaults."""
    later = tuple(k for k, on in (("regress_margin_glass", s.regress_margin_glass > 0),
                                  ("regress_margin_age", s.regress_margin_age > 0), ("drop_labels", s.drop_labels),
                                  ("regress_conditional", bool(s.conditional())),
                                  ("regress_widen", s.regress_widen != 1.0)) if not on)
    return settings_key(s, exclude=("epochs",) + later)


def paths_of(profile, out_dir=None, v1_dir=None) -> dict:
    root = profile.data_root
    return {"out": Path(out_dir) if out_dir else root / OUT, "v1": Path(v1_dir) if v1_dir else root / V1_DIR,
            "stage2": profile.stage_dir("stage2")}


def shipped_folder(profile) -> Path | None:
    """The profile's shipped v9 run (``stage6.shipped``), None when absent or switched off."""
    s6 = profile.get("stage6", {})
    return profile.path(s6["shipped"]) if s6.get("shipped") and s6.get("use_shipped", True) else None


def filter_rules(stage2_dir: Path, profile) -> dict:
    """Stage 2's filter ``{property: (op, threshold)}``: from its ``run_config.json``, else the profile, else the spec."""
    rec = {}
    p = Path(stage2_dir) / "run_config.json"
    if p.is_file():
        data = json.loads(p.read_text())
        rec = data.get("values", data) if isinstance(data, dict) else {}
    prof = profile.get("stage2", {})
    out = {}
    for prop, (op, cut) in SPEC_FILTER.items():
        key = FILTER_KEYS[prop]
        out[prop] = (op, float(rec.get(key, prof.get(key, cut))))
    return out


def kept_images(stage2_dir: Path, resolution: int, show_progress: bool) -> KeptSet:
    """The kept images with zero labels (v9 feeds zeros to G and D; no label file is read)."""
    nos, paths = list_filtered(stage2_dir)
    images = load_images(paths, resolution, show_progress)
    return KeptSet(nos, paths, images, np.zeros((len(nos), 7), np.float32), ("none",) * 7,
                   Path(stage2_dir) / "filtered")


def consumed_records(p: dict) -> dict:
    """What the stage consumes (pipeline.lineage.check_upstreams; writes nothing): the stage-2 kept set
    and the FineTune-v1 run must be complete, unchanged since they finished, and agree with each other."""
    return lineage.check_upstreams({"stage2": (p["stage2"], "run_cnn.py"),
                                    "stage5/v1": (p["v1"], "run_stylegan_fine_tuning_v1.py")})


def start_models(profile, s: V9StageSettings, v1_dir: Path):
    """(v9 G from v1 with the new branch drawn, v1's D, v1 G, what was done). With ``drop_labels`` the
    v9 G's ``label_weight`` is zeroed (:func:`stylegan_modified.v9.drop_label_input`); v1 G stays v1."""
    gcfg, dcfg = build_configs(profile)
    for name in SHIPPED_MODELS:
        if not (v1_dir / name).is_file():
            raise InputError(f"FineTune-v9 starts from the finished FineTune-v1: {v1_dir / name} not found; "
                             f"run run_stylegan_fine_tuning_v1.py first (or pass --v1-dir)")
    v1_state = read_checkpoint(v1_dir / "generator.pth")
    try:
        g1 = load_generator(v1_state, gcfg, "v1").eval()
        g = build_v9_generator(gcfg, seed=s.seed)
        init = init_v9_from_v1(g, v1_state, seed=s.seed)
        if s.drop_labels:
            init.update(drop_label_input(g))
    except CheckpointError as exc:                       # name the file, not only the model
        raise CheckpointError(f"{v1_dir / 'generator.pth'}: {exc}") from None
    done = {"generator_source": str(v1_dir / "generator.pth"), "discriminator_source": str(v1_dir / "discriminator.pth"),
            **init}
    d = load_v9_discriminator(v1_dir / "discriminator.pth", dcfg)
    return g, d, g1, done


def branch_sample(g, seed: int, n: int = 256) -> dict:
    gen = torch.Generator().manual_seed(int(seed) + 9_000_009)
    return branch_stats(g, torch.randn(n, g.cfg.z_dim, generator=gen), torch.zeros(n, g.spec.label_dim))


def main(profile_name, consts: dict, args=None, paths: dict | None = None) -> dict | None:
    """The stage from a script: constants < profile ``stage6.v9`` < flags (``run_config.json``)."""
    profile = profile_of(profile_name)
    cfg = resolve_stage({k: v for k, v in consts.items() if k not in RUNTIME_KEYS}, profile, "stage6.v9", args)
    given = given_flags(args)
    runtime = {k: given.get(k, consts.get(k)) for k in RUNTIME_KEYS}
    for k in set(RUNTIME_KEYS) & set(given):
        check_value(k, given[k], f"flag --{k.replace('_', '-')}")
    s = settings_of(V9StageSettings, cfg.settings.values)
    try:
        s.validate()                                     # before anything is read or written
    except ValueError as exc:
        src = next((v for k, v in cfg.settings.sources.items() if str(exc).startswith(k + " ")), "settings")
        raise InputError(f"{src}: {exc}") from None
    if runtime.get("quick"):
        s.epochs, s.checkpoint_every, s.max_steps_per_epoch = 1, 2, 4
        s.monitor_images, s.regress_judged, s.regress_samples = 8, 40, 400
        runtime["acceptance_n"] = 40
    if runtime.get("threads"):
        torch.set_num_threads(int(runtime["threads"]))
    if not runtime.get("shipped", True):
        profile.setdefault("stage6", {})["use_shipped"] = False
    p = paths_of(profile, (paths or {}).get("out"), (paths or {}).get("v1_dir"))
    consumed_records(p)                                  # upstreams complete and unchanged, before writing
    write_settings(p["out"], cfg, {"runtime": runtime})
    with distributed(runtime) as ctx:
        m = run_v9_stage(profile, s, p, ctx, evaluator=(paths or {}).get("evaluator"),
                         acceptance_n=int(runtime.get("acceptance_n") or 1000),
                         show_progress=bool(runtime.get("progress", True)))
    if m is not None:
        a = m["acceptance"]["generators"]["v9"]
        print(f"FineTune-v9: {m['steps']} steps, {m['train_seconds']} s; v9 concept shares "
              f"(evaluator) {a.get('evaluator_shares')}; stage-2 CNN means {a['cnn_means']}")
    return m


def run_v9_stage(profile, s: V9StageSettings, p: dict, ctx: DistContext | None = None, evaluator=None,
                 acceptance_n: int = 1000, show_progress: bool = True) -> dict | None:
    """Train (resume / install / skip when finished), then measure and report on the main process."""
    s.validate()
    ctx = ctx or init_distributed()
    out = p["out"]
    kept = kept_images(p["stage2"], int(profile["resolution"]), show_progress and ctx.is_main)
    consumed = consumed_records(p)
    if ctx.is_main:
        lineage.begin(out, consumed, f"remove {out} (or pass --out) to start again")
        remove_stale_tmp(out)
    ctx.barrier()
    g, d, g1, init_done = start_models(profile, s, p["v1"])
    cnns = load_monitor_cnns(profile, p["stage2"])
    ev = load_evaluator_for(profile, evaluator)
    monitor = V9Monitor(cnns, s.monitor(), ev)
    trainer = V9Trainer(g.to(ctx.device), d.to(ctx.device), s.trainer(), ctx, monitor, out if ctx.is_main else None)
    key = {**run_key(s), "v1": str(p["v1"]), "images": len(kept)}
    loop = FineTuneLoop(trainer, kept, out, LoopSettings("v9", s.epochs, s.batch_size, s.seed, s.checkpoint_every,
                                                         s.max_steps_per_epoch, s.drop_last), key, ctx, show_progress)
    loop.start(init_done, ShippedRun(shipped_folder(profile), run_settings(profile.data_root, key, s.epochs,
                                                                          kept.img_nos),
                                     lambda: v1_bases(p["v1"]), kept.img_nos))
    if not loop.installed and loop.epoch == 0 and loop.step == 0 and not loop.log["rows"]:
        init_done["branch_original_init"] = branch_sample(g, s.seed)
        if s.start == "regress":
            score = lambda imgs: {q: monitor.score(imgs)[f"{q}_score"].to_numpy() for q in FILTER_PROPERTIES}
            g1_start = g1
            if s.drop_labels:                            # judge and regress what v9 maps: v1 with the label dropped
                g1_start = copy.deepcopy(g1)
                drop_label_input(g1_start)
            init_done["regressed_start"] = regressed_start(
                g, g1_start, score, filter_rules(p["stage2"], profile), judged=s.regress_judged,
                samples=s.regress_samples, margin=s.regress_margin,
                margins={q: m for q, m in (("glass", s.regress_margin_glass), ("age", s.regress_margin_age)) if m > 0},
                seed=s.seed, conditional=s.conditional(), widen=s.regress_widen)
        init_done["branch_start"] = branch_sample(g, s.seed)
        loop.log["init_done"] = init_done

    def monitor_epoch(epoch: int) -> None:
        grid_figure(g, out / "grids" / f"epoch_{epoch:04d}.png", s.grid_z, s.seed,
                    f"v9 after epoch {epoch}: 10 z x the 7 monitoring labels")
        atomic_write_csv(out / "train_steps.csv", pd.DataFrame(loop.log["rows"]))

    res = loop.run(monitor_epoch)
    if not ctx.is_main:
        return None
    atomic_write_csv(out / "train_steps.csv", pd.DataFrame(res.log["rows"]))
    return finish_v9_stage(profile, s, g, g1, kept, out, res, cnns, ev, consumed, acceptance_n, ctx)


def v1_bases(v1_dir: Path) -> dict:
    """The partial-checkpoint bases of a shipped v9 run: the local FineTune-v1's G and D."""
    return {name: (read_checkpoint(Path(v1_dir) / name), Path(v1_dir) / name) for name in SHIPPED_MODELS}


def finish_v9_stage(profile, s, g, g1, kept, out, res, cnns, ev, consumed, acceptance_n, ctx) -> dict:
    """The acceptance figures, lineage.json, report.md and metrics.json (written last)."""
    g.eval()
    gbase_state = base_generator_state(profile)[0]
    acc = acceptance(g, g1, gbase_state, kept, cnns, ev, n=acceptance_n, seed=s.seed, profile=profile)
    atomic_write_json(out / "acceptance.json", acc)
    log = res.log
    rows = log["rows"]
    counts = {k: {int(a): int(b) for a, b in pd.Series([r[k] for r in rows]).value_counts().sort_index().items()}
              for k in ("d_train_count", "g_train_count")} if rows else {}
    secs = float(log["seconds"])
    init = log.get("init_done") or {}
    m = {"stage": "6_finetune_v9", "profile": profile.name, "settings": asdict(s), "images": len(kept),
         "init": init, "distributed": ctx.describe(), "trained_this_run": res.trained_now,
         "installed_from_shipped": res.installed or (out / "installed_from_shipped.json").is_file(),
         "epochs_done": s.epochs, "steps": len(rows), "train_seconds": round(secs, 1),
         "seconds_per_step": round(secs / max(len(rows), 1), 3), "train_cpu_seconds": round(float(log["cpu_seconds"]), 1),
         "update_counts": counts,
         "branch": {"original_init": init.get("branch_original_init"), "start": init.get("branch_start"),
                    "per_epoch": log.get("epoch_rows", []), "end": acc["branch_end"]},
         "acceptance": acc, "consumed": consumed, "evaluator": str(evaluator_path(profile)) if ev else None,
         "peak_rss_mb": round(peak_rss_mb(), 1), **install_record(out)}
    write_v9_report(out, profile, s, m, rows, g, g1)
    outputs = [q for q in ("generator.pth", "discriminator.pth", "train_log.csv", "concept_log.csv", "train_steps.csv",
                           "acceptance.json", "report.md") if (out / q).is_file()]
    outputs += [q.relative_to(out) for q in sorted((out / "grids").glob("*.png"))]
    outputs += [q.relative_to(out) for q in sorted((out / "report").glob("*.png"))]
    lineage.finish(out, outputs, consumed)
    write_metrics(out, m)
    return m


def pack_v9_run(profile, out: Path | None = None, dest: Path | None = None, levels: int = 127) -> dict:
    """Pack the finished run into the profile's shipped folder: G and D as int8-quantised deltas
    against the local v1 (``pipeline.shipped``, ``quantize_levels``; the new branch in int16) and the logs."""
    p = paths_of(profile, out)
    dest = Path(dest) if dest else shipped_folder(profile)
    if dest is None:
        raise ValueError(f"profile {profile.name!r} has no stage6.shipped folder")
    state = read_checkpoint(p["out"] / STATE_FILE)
    s = settings_of(V9StageSettings, json.loads((p["out"] / "metrics.json").read_text())["settings"])
    if int(state["epoch"]) < int(s.epochs):
        raise ValueError(f"{p['out']} is not finished: epoch {state['epoch']} of {s.epochs}")
    key = json.loads(state["settings_json"])
    nos, _ = list_filtered(p["stage2"])
    return pack_run(p["out"], dest, "FineTune-v9", run_settings(profile.data_root, key, s.epochs, nos),
                    {k: state[k] for k in ("log_json", "epoch", "step", "phase")}, v1_bases(p["v1"]),
                    SHIPPED_COPY, img_nos=nos, quantize_levels=levels)
