"""The generation test on the oracle (:mod:`evaluation.oracle`), the stage of ``run_oracle.py``.

Writes ``<data root>/stage5/oracle/``: the generation test's files (``result_each_z.csv``,
``metrics.json``, ``report.md`` with the best z's grid) and ``fit.json`` (the label -> world
lines). Needs the kept set with the property CNN's labels and the property CNN
(``run_property_score_cnn.py``). The FineTune reports show its leak and identity figures beside theirs.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from evaluation.generation import run_generation_test
from evaluation.generation import settings_from as test_settings_from
from evaluation.judges import evaluator_calibration, make_judges
from evaluation.networks import load_evaluator_for, load_property_cnn_for
from evaluation.oracle import CONTROLLED, OracleGenerator
from pipeline.io import InputError, atomic_write_json
from pipeline.runtime import apply_threads
from pipeline.vocabulary import PROPERTIES as P7
from synthface.truth import world

from .bases import kept_set_of, latents_of
from .finetune_gan import CNN_LABELS, PROPERTY_CNN
from .settings import profile_of, resolve_stage

OUT_SUBDIR = "stage5/oracle"


def run_oracle(profile, test_cfg: dict, out: Path | None = None, progress: bool = True,
                    force: bool = False) -> dict:
    """Run the test (or return the finished one's metrics: ``fit.json`` is written last, so it marks
    a finished run of the same ``n_z``; ``force`` re-runs)."""
    if "world_seed" not in profile:
        raise InputError(f"profile {profile.name!r} has no synthetic world: the oracle needs one")
    root = profile.data_root
    out = Path(out) if out else root / OUT_SUBDIR
    n_z = int(test_cfg["n_z"])
    if not force and (out / "fit.json").is_file() and (out / "metrics.json").is_file():
        done = json.loads((out / "metrics.json").read_text())
        if done.get("n_z") == n_z:
            return done
    kept = kept_set_of(profile, root / CNN_LABELS, P7, show_progress=False)
    oracle = OracleGenerator.fitted(world(int(profile["generator"]["z_dim"]), int(profile["world_seed"])), P7,
                                    latents_of(profile, kept.img_nos), kept.labels, int(profile["resolution"]))
    ev = load_evaluator_for(profile)
    cal = evaluator_calibration(ev, kept.images, kept.labels, P7) if ev is not None else None
    cnn = load_property_cnn_for(profile, root / PROPERTY_CNN)
    with torch.inference_mode():
        m = run_generation_test(oracle, make_judges(cnn, ev, cal), out, test_settings_from(test_cfg),
                                title="Oracle (the renderer with the label's eyes / mouth / pose)",
                                progress=progress)
    atomic_write_json(out / "fit.json", oracle.fit)
    return m


def main(profile_name: str, consts: dict, args=None, out: str | None = None) -> dict | None:
    """The stage from ``run_oracle.py``: test settings = constants < profile
    ``stage5.generation_test`` < flags; prints pass counts, r and the largest leak per judge."""
    profile = profile_of(profile_name)
    cfg = resolve_stage(consts, profile, "stage5.oracle", args)
    apply_threads(int(cfg.runtime.get("threads", 0)))
    if "world_seed" not in profile:
        print(f"profile {profile.name!r} has no synthetic world: no oracle to test")
        return None
    m = run_oracle(profile, dict(cfg.test.values), out, progress=bool(cfg.runtime.get("progress", True)),
                        force=bool(cfg.settings.values.get("force", False)))
    for name, j in m["judges"].items():
        leak = j["leak_mean_abs_r"]
        print(f"{name}: {j['passes']}/{m['n_z']} pass; mean r "
              + ", ".join(f"{p} {j['mean'][p + '_corr']:.3f}" for p in CONTROLLED)
              + f"; leak mean |r| max {max(leak.values()):.2f}")
    return m
