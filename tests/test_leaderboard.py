"""The leaderboard's scoring (pass rule, leak, identity spread) and its files, on made-up scores."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from editing.directions import EditDirections
from stages.leaderboard import LEAK_OTHER, pearson_rows, same_settings, slope_rows, summarise
from stages.leaderboard_report import write_outputs
from vectorfind.protocols import CONTROLLED


def test_row_statistics():
    x = np.linspace(-1, 1, 5)
    y = np.stack([2 * x + 1, -x, np.ones(5)])
    assert np.allclose(slope_rows(x, y), [2, -1, 0])
    r = pearson_rows(x, y)
    assert np.allclose(r[:2], [1, -1]) and np.isnan(r[2])


def _scores(n, alphas, own_slope, leak_slope, rng):
    out = {}
    for p in CONTROLLED:
        for q in CONTROLLED + LEAK_OTHER:
            base = rng.standard_normal((n, 1))
            slope = own_slope[p] if q == p else leak_slope
            out[f"evaluator|{p}|{q}"] = base + slope * alphas[None, :]
    return out


def test_summary_pass_rule_and_leak_size(tmp_path):
    rng = np.random.default_rng(0)
    alphas = np.linspace(-1, 1, 5)
    n = 6
    scores = _scores(n, alphas, {"eyes": 1.0, "mouth": 1.0, "pose": -1.0}, 0.1, rng)
    small = {p: rng.standard_normal((n, 5, 12)) for p in CONTROLLED}
    ds = EditDirections("x", "w", meta={"samples_needed": 10, "fit_seconds": 1.5})
    res = summarise("x", ds, scores, alphas, small, 2.0, {"judges": {"evaluator": None}}, n)
    ev = res["judges"]["evaluator"]
    assert ev["passes"] == 0                                    # pose goes down: fails the signed rule
    assert np.isclose(ev["mean_r"]["eyes"], 1.0) and np.isclose(ev["mean_r"]["pose"], -1.0)
    # leak size = 0.1 / spread(q) per 1 / spread(p): the spreads are the α = 0 stds of the cases
    spread = {q: np.std(scores[f"evaluator|eyes|{q}"][:, 2]) for q in CONTROLLED + LEAK_OTHER}
    assert np.isclose(ev["leak_size"]["eyes->mouth"], 0.1 / spread["mouth"] / (1 / spread["eyes"]))
    scores = _scores(n, alphas, {"eyes": 1.0, "mouth": 1.0, "pose": 1.0}, 0.0, rng)
    res = summarise("x", ds, scores, alphas, small, 2.0, {"judges": {"evaluator": None}}, n)
    assert res["judges"]["evaluator"]["passes"] == n and res["judges"]["evaluator"]["leak_size_other"] == 0
    assert res["samples_needed"] == 10 and res["fit_seconds"] == 1.5 and res["identity_spread"] > 0
    metrics = {"generator": "tiny", "settings": {"n_cases": n, "target_stds": 1.5}, "judges": ["evaluator"],
               "judge_notes": {}, "seconds": 1.0, "methods": {"x": res}}
    write_outputs(tmp_path, metrics)
    df = pd.read_csv(tmp_path / "leaderboard.csv")
    assert df.loc[0, "passes_evaluator"] == n and df.loc[0, "method"] == "x"
    assert json.loads((tmp_path / "metrics.json").read_text())["methods"]["x"]["judges"]["evaluator"]["passes"] == n
    text = (tmp_path / "report.md").read_text()
    assert "passes.png" in text and "methods/x/strip.png" in text and (tmp_path / "passes.png").is_file()


def test_resume_compares_settings_as_json():
    key = {"sefa_layers": (0, 4), "n_cases": 100}
    stored = json.loads(json.dumps({"settings": key}))
    assert same_settings(stored, key)
    assert not same_settings(stored, {**key, "n_cases": 10})
    assert same_settings({}, key)                   # an older result without settings
