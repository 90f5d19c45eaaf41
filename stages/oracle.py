"""The generation test on the oracle (:mod:`evaluation.oracle`), the stage of ``run_oracle.py``.

Writes ``<data root>/stage5/oracle/``: the generation test's files (``result_each_z.csv``,
``metrics.json``, ``report.md`` with the best z's grid) and ``fit.json`` (the label -> world
lines). Needs the kept set with the property CNN's labels and the property CNN
(``run_property_score_cnn.py``). The FineTune reports show its leak and identity figures beside theirs.

Lineage (:mod:`pipeline.lineage`): stages 1 and 2 and the property CNN must be complete and unchanged;
``lineage.json`` records them, ``metrics.json`` is removed when the test starts and written last. A
finished test is repeated only when its inputs, its settings or the thread count differ (``force``:
always); the test keeps nothing between runs, so an interrupted run simply runs again.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from evaluation.generation import run_generation_test
from evaluation.generation import settings_from as test_settings_from
from evaluation.judges import calibration_cache, evaluator_calibration, make_judges
from evaluation.networks import load_evaluator_for, load_property_cnn_for
from evaluation.oracle import CONTROLLED, OracleGenerator
from pipeline import lineage
from pipeline.io import InputError, atomic_write_json
from pipeline.runtime import apply_threads, thread_record
from pipeline.vocabulary import PROPERTIES as P7
from synthface.truth import world

from .bases import kept_set_of, latents_of, upstream_records
from .finetune_gan import CNN_LABELS, PROPERTY_CNN
from .settings import profile_of, resolve_stage

OUT_SUBDIR = "stage5/oracle"


def run_oracle(profile, test_cfg: dict, out: Path | None = None, progress: bool = True,
                    force: bool = False) -> dict:
    """Run the test, or return the finished one's metrics when it was made from the same inputs
    (:func:`pipeline.lineage.finished_from`) with the same settings and thread count; ``force`` re-runs."""
    if "world_seed" not in profile:
        raise InputError(f"profile {profile.name!r} has no synthetic world: the oracle needs one")
    root = profile.data_root
    out = Path(out) if out else root / OUT_SUBDIR
    settings = test_settings_from(test_cfg)
    settings.validate()
    # stages 1, 2 and the property CNN's folder (its checkpoint and labels) complete and unchanged
    consumed = upstream_records(profile, root / CNN_LABELS)
    key = json.loads(json.dumps({"settings": settings.to_dict(), **thread_record()}, default=str))
    if not force and lineage.finished_from(out, consumed):
        done = json.loads((out / lineage.COMPLETION).read_text())
        if done.get("run_key") == key:
            return done
    kept = kept_set_of(profile, root / CNN_LABELS, P7, show_progress=False)
    oracle = OracleGenerator.fitted(world(int(profile["generator"]["z_dim"]), int(profile["world_seed"])), P7,
                                    latents_of(profile, kept.img_nos), kept.labels, int(profile["resolution"]))
    ev = load_evaluator_for(profile)
    cal = (evaluator_calibration(ev, kept.images, kept.labels, P7, cache_dir=calibration_cache(profile.data_root))
           if ev is not None else None)
    cnn = load_property_cnn_for(profile, root / PROPERTY_CNN)
    lineage.begin(out, consumed, check=False)                   # every input read; the test starts afresh
    shutil.rmtree(out / "images", ignore_errors=True)           # images of an earlier test are not this one's
    with torch.inference_mode():
        m = run_generation_test(oracle, make_judges(cnn, ev, cal), out, settings,
                                title="Oracle (the renderer with the label's eyes / mouth / pose)",
                                progress=progress)
    atomic_write_json(out / "fit.json", oracle.fit)
    m = {**m, "run_key": key}
    lineage.close_stage(out, consumed, m)                       # lineage.json, then metrics.json (last)
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
