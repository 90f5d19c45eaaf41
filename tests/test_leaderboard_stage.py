"""The leaderboard as a stage on a tiny world: three judges (stages 3-4 reading fewer cases), lineage
(a changed or unfinished stage-6 upstream is refused; metrics.json last), resume and re-use."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from editing.directions import EditDirections
from pipeline import lineage
from pipeline.profiles import Profile
from stages import leaderboard as board
from stages.leaderboard_inputs import upstream_records
from tests.editing_tiny import scorer, tiny_generator
from tests.single_thread import one_thread  # noqa: F401

METHODS = ("interfacegan", "interfacegan_conditional", "ganspace")
SETTINGS = dict(methods=METHODS, n_cases=6, n_calibrate=3, n_fit=96, n_pick=32, n_pca=200, alpha_steps=5,
                fit_judge="property_cnn", parsing_cases=4, batch_size=32)


class Judge:
    """A judge over the tiny scorer: ``noise`` adds seeded noise of that size (a judge that reads worse)."""

    def __init__(self, noise: float = 0.0, seed: int = 0):
        self.noise, self.seed, self.calls = noise, seed, 0

    def measure(self, images):
        self.calls += len(images)
        out = scorer(images)
        if self.noise:
            rng = np.random.default_rng(self.seed)
            out = {k: v + self.noise * rng.standard_normal(v.shape).astype(np.float32) for k, v in out.items()}
        return out


class Inputs:
    def __init__(self):
        self.loads = 0
        self.judges = {"evaluator": Judge(), "property_cnn": Judge(0.002, 1), "parsing": Judge(0.05, 2)}

    def __call__(self, profile, s):
        self.loads += 1
        return {"g9": tiny_generator(), "g3": None, "source": "tiny v9", "judges": self.judges,
                "judge_notes": {}, "segmenter": None}


def _stage6(root, seed=0):
    folder = root / "stage6" / "v9"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(tiny_generator(seed).state_dict(), folder / "generator.pth")
    lineage.seal(folder)
    return folder


@pytest.fixture
def world(tmp_path):
    profile = Profile({"name": "tiny", "data_root": str(tmp_path / "data")})
    _stage6(profile.data_root)
    return profile


def run(profile, inputs, **kw):
    s = board.BoardSettings(**{**SETTINGS, **kw})
    return board.run_leaderboard(profile, s, profile.data_root / "leaderboard", progress=False, inputs=inputs,
                                 run_config=None)


def test_three_judges_lineage_and_resume(world):
    inputs = Inputs()
    m = run(world, inputs)
    out = world.data_root / "leaderboard"
    df = pd.read_csv(out / "leaderboard.csv")
    assert list(df["method"].sort_values()) == sorted(METHODS)
    for j in ("evaluator", "property_cnn", "parsing"):
        assert f"passes_{j}" in df and f"r_eyes_{j}" in df
    # the stages 3-4 judge read the first 4 cases of each property's 6 x 5 edits (plus the fit and
    # calibration images it never sees: it is not the fit judge)
    assert (df["cases_parsing"] == 4).all() and "cases_evaluator" not in df
    assert inputs.judges["parsing"].calls == len(METHODS) * 3 * 4 * 5
    for r in m["methods"].values():
        a, js = r["agreement"], r["judges"]
        assert a["n_cases"] == 4 and a["passes_every_judge"] <= min(j["passes"] for j in js.values())
        shares = [j["passes"] / j["n_cases"] for j in js.values()]
        assert np.isclose(a["pass_share_gap"], max(shares) - min(shares))
    # each row's calibrated set is saved with its α scales (a conditional row: the base set, flagged)
    for name in METHODS:
        es = EditDirections.load(out / "methods" / name / "edit_set")
        assert es.scales == pytest.approx(m["methods"][name]["scales"]) and len(es.scales) == 3
        assert es.meta["row"] == {"method": name, "conditional": name.endswith("_conditional")}
    text = (out / "report.md").read_text()
    assert "Judges' agreement" in text and "## Acceptance (issue 19)" in text
    a = m["acceptance"]
    assert a["methods_ranked"] == 3 and not a["v3_reference"] and a["best"]["of"] == 6
    assert a["best"]["passes"] == max(r["judges"]["evaluator"]["passes"] for r in m["methods"].values())
    cond = a["conditional_eyes_to_mouth"]["interfacegan"]
    assert cond["plain"] == m["methods"]["interfacegan"]["judges"]["evaluator"]["leak_size"]["eyes->mouth"]
    assert "| method | passes evaluator (of 6) / property_cnn (of 6) / parsing (of 4) |" in text
    # lineage: the stage-6 upstream and the generator file are recorded; metrics.json is the last write
    rec = json.loads((out / lineage.LINEAGE).read_text())
    assert rec["state"] == "finished" and set(rec["consumed"]) == {"stage6/v9", "generator"}
    assert "leaderboard.csv" in rec["outputs"] and "metrics.json" not in rec["outputs"]
    assert (out / "metrics.json").stat().st_mtime_ns >= (out / lineage.LINEAGE).stat().st_mtime_ns
    # a finished board from the same inputs and settings is returned without loading anything
    assert run(world, inputs)["methods"] == json.loads((out / "metrics.json").read_text())["methods"]
    assert inputs.loads == 1
    # other settings for the board but not the methods (batch size): every method resumes, none refitted
    before = {n: (out / "methods" / n / "result.json").stat().st_mtime_ns for n in METHODS}
    run(world, inputs, batch_size=16)
    assert inputs.loads == 2
    assert before == {n: (out / "methods" / n / "result.json").stat().st_mtime_ns for n in METHODS}


def test_interrupted_board_resumes_finished_methods(world):
    inputs = Inputs()
    out = world.data_root / "leaderboard"
    run(world, inputs, methods=METHODS[:1])
    first = (out / "methods" / METHODS[0] / "result.json").read_bytes()
    (out / "metrics.json").unlink()                       # as if killed while the next method ran
    run(world, inputs)
    assert (out / "methods" / METHODS[0] / "result.json").read_bytes() == first
    assert set(json.loads((out / "metrics.json").read_text())["methods"]) == set(METHODS)


def test_changed_or_unfinished_upstream_is_refused(world):
    inputs = Inputs()
    out = world.data_root / "leaderboard"
    run(world, inputs, methods=METHODS[:1])
    # stage 6 re-run with other weights: its outputs changed; the finished board is not added to
    _stage6(world.data_root, seed=1)
    with pytest.raises(lineage.LineageError, match="made from another"):
        run(world, inputs, methods=METHODS[:1])
    assert (out / "metrics.json").is_file()               # refused before anything was touched
    # a stage-6 folder without its completion mark
    (world.data_root / "stage6" / "v9" / "metrics.json").unlink()
    with pytest.raises(lineage.LineageError, match="incomplete"):
        run(world, inputs, methods=METHODS[:1])
    assert inputs.loads == 1


def test_upstreams_named_without_loading(world):
    root = world.data_root
    v3 = root / "stage5" / "v3"
    v3.mkdir(parents=True)
    torch.save({"x": torch.zeros(2)}, v3 / "generator.pth")
    rec = upstream_records(world, "stage6/v9/generator.pth", ("v3_label",))
    assert set(rec) == {"stage6/v9", "generator"}          # stage 5 v3 unfinished (and nothing shipped): not used
    lineage.seal(v3)
    rec = upstream_records(world, "stage6/v9/generator.pth", ("v3_label",))
    assert set(rec) == {"stage6/v9", "generator", "stage5/v3", "v3_generator"}
    assert rec["v3_generator"]["file"] == str(v3 / "generator.pth")
    assert "stage5/v3" not in upstream_records(world, "stage6/v9/generator.pth", ("interfacegan",))
    with pytest.raises(Exception, match="not found"):
        upstream_records(world, "stage6/v9/missing.pth", ())
