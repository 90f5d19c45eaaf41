"""The oracle's leak and identity figures in stage 7's test form, through the same judges.

The oracle (``evaluation.oracle.OracleGenerator``) renders a case's person with eyes / mouth /
pose set directly in the world and everything else exactly that person's, so whatever leak a
judge shows on it is the judge's own cross-talk. Each oracle case is the stage's 50-image grid
(loop order mouth × eyes × pose); α maps to label units as α · ``LABEL_PER_ALPHA`` and labels to
world units by the world's own spread (mean ± std over random people), clipped to its range.
Written once per data root (``stage7/oracle_leak.json``); the stage's report shows it beside
its own figures.

That fixed oracle is not on the run's terms: it always uses the SVM grid without the α scale, scores
in-memory images (the test scores JPEG round trips) and moves eyes / mouth / pose by its own fixed
amounts (on the shipped v9 about 2.4 / 3 / 4 times what the SVM row's edits move them through the
evaluator), while a judge's cross-talk r depends on the properties' moves relative to each other
and to the images' noise. :func:`matched_oracle_leak` renders the same people on the run's own terms
(per run, ``<run>/oracle_leak_matched.json``): the run's α table (method grid × α scale), its JPEG
setting, each person's own eyes / mouth / pose moved by α_p · L_p world stds (clipped to the world's
range), L_p chosen so that the oracle moves p through the matching judge (the evaluator) as much per
α as the run's edits did (mean |partial slope| over cases), from the fixed oracle's own slope.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from evaluation.oracle import CONTROLLED as WORLD_COLUMNS, OracleGenerator
from pipeline.io import atomic_write_json
from synthface.renderer import render_batch
from synthface.truth import world
from vectorfind.cases import alpha_table
from vectorfind.sampling import uint8_to_scorer
from vectorfind.protocols import CONTROLLED

from .vectorfind_report import leak_of, own_slope

LABEL_PER_ALPHA = 1.0 / 1.8          # the grid's largest |α| = 1 label std
MAX_CASES = 100                      # people: the oracle's mean |r| then has about our own figure's standard
#                                      error (0.02 at 100, 0.04 at 30 against a 0.1 tolerance; ISSUES #67)


def oracle_generator(profile, n_fit: int = 4000, seed: int = 0) -> OracleGenerator:
    w = world(int(profile["generator"]["z_dim"]), int(profile["world_seed"]))
    z = np.random.default_rng(seed).standard_normal((n_fit, w.z_dim)).astype(np.float32)
    t = w.truth(z)
    fit = {}
    for p, col in WORLD_COLUMNS.items():
        x = t[col].to_numpy(np.float64)
        fit[p] = {"column": col, "scale": float(x.std()), "offset": float(x.mean()), "low": float(x.min()),
                  "high": float(x.max())}
    return OracleGenerator(w, CONTROLLED, fit, int(profile["resolution"]))


def oracle_leak(profile, out: Path, scorers: dict, cases: int, seed: int = 0) -> dict:
    """judge -> list of per-case leak records (the stage's ``leak_rows`` shape) for ``cases`` people."""
    path = Path(out) / "oracle_leak.json"
    cases = min(int(cases), MAX_CASES)
    if path.is_file():
        done = json.loads(path.read_text())
        if done.get("cases") >= cases and set(done["judges"]) >= set(scorers) and \
                all("slope" in recs[0] for recs in done["judges"].values() if recs):     # older files: no slopes
            return done
    og = oracle_generator(profile)
    table = alpha_table("svm")
    label = np.zeros((len(table), len(CONTROLLED)), np.float32)
    for i, p in enumerate(CONTROLLED):
        label[:, i] = table[f"{p}_pm"].to_numpy() * LABEL_PER_ALPHA
    rng = np.random.default_rng([seed, 77])
    recs = {j: [] for j in scorers}
    for _ in range(cases):
        z = np.repeat(rng.standard_normal((1, og.z_dim)).astype(np.float32), len(table), axis=0)
        with torch.inference_mode():
            images = og.render(torch.from_numpy(z), torch.from_numpy(label))
        for j, s in scorers.items():
            recs[j].append(leak_of(table, {k: np.asarray(v, np.float64) for k, v in s(images).items()}))
    res = {"cases": cases, "judges": recs, "label_per_alpha": LABEL_PER_ALPHA}
    atomic_write_json(path, res)
    return res


def matched_label_per_alpha(run_recs: list, fixed_recs: list) -> dict:
    """p -> world stds per unit of the run's α such that the oracle's own move matches the run's (see
    the module docstring): LABEL_PER_ALPHA × run slope / fixed-oracle slope, both through one judge."""
    return {p: LABEL_PER_ALPHA * own_slope(run_recs, p) / own_slope(fixed_recs, p) for p in CONTROLLED}


def matched_oracle_leak(profile, run_dir: Path, scorers: dict, table, jpeg: bool, label_per_alpha: dict,
                        cases: int, seed: int = 0, target: dict | None = None, judge: str | None = None,
                        refine: int = 0) -> dict:
    """judge -> per-case leak records of the oracle on the run's terms (module docstring); kept in
    ``<run_dir>/oracle_leak_matched.json`` and reused while its settings are the same. With ``target``
    (p -> the run's own slope through ``judge``) the world stds per α are corrected ``refine`` times
    by target / achieved (the clipped world range makes the first guess fall short, mostly the mouth's)."""
    path = Path(run_dir) / "oracle_leak_matched.json"
    cases = min(int(cases), MAX_CASES)
    key = {"cases": cases, "seed": int(seed), "jpeg": bool(jpeg),
           "label_per_alpha": {p: float(label_per_alpha[p]) for p in CONTROLLED},
           "alphas": {p: [float(a) for a in table[f"{p}_pm"]] for p in CONTROLLED}}
    if target is not None and refine > 0:
        key.update(target={p: float(target[p]) for p in CONTROLLED}, judge=judge, refine=int(refine))
    if path.is_file():
        done = json.loads(path.read_text())
        if done.get("key") == key and set(done["judges"]) >= set(scorers):
            return done
    og = oracle_generator(profile)
    per_alpha = dict(key["label_per_alpha"])
    for step in range(1 + (int(refine) if "target" in key else 0)):
        if step:
            per_alpha = {p: per_alpha[p] * key["target"][p] / own_slope(recs[judge], p) for p in CONTROLLED}
        recs = _oracle_records(og, scorers, table, jpeg, per_alpha, cases, seed)
    res = {"key": key, "cases": cases, "label_per_alpha": per_alpha, "judges": recs}
    atomic_write_json(path, res)
    return res


def _oracle_records(og, scorers: dict, table, jpeg: bool, per_alpha: dict, cases: int, seed: int) -> dict:
    rng = np.random.default_rng([seed, 77])                 # the fixed oracle's people
    recs = {j: [] for j in scorers}
    for _ in range(cases):
        z = np.repeat(rng.standard_normal((1, og.z_dim)).astype(np.float32), len(table), axis=0)
        t = og.world.truth(z).copy()
        for p, f in og.fit.items():
            a = table[f"{p}_pm"].to_numpy(np.float64)
            t[f["column"]] = np.clip(t[f["column"]].to_numpy(np.float64) + a * per_alpha[p] * f["scale"],
                                     f["low"], f["high"])
        rgb, _ = render_batch(t, og.resolution)
        images = uint8_to_scorer(np.asarray(rgb, np.uint8), jpeg)
        with torch.inference_mode():
            for j, s in scorers.items():
                recs[j].append(leak_of(table, {k: np.asarray(v, np.float64) for k, v in s(images).items()}))
    return recs
