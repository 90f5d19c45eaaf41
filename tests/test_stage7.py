"""Stage 7 (stages/vectorfind.py) end to end on the tiny split-mapping world: files, resume, QA, sweep."""
import json

import numpy as np
import pandas as pd
import pytest

from pipeline.profiles import Profile
from stages import vectorfind as stage
from stages.vectorfind_samples import CHUNK, load_samples
from vectorfind.cases import PASS_THRESHOLDS
from vectorfind.pixel_local import local_directions
from tests.vectorfind_tiny import TinyMidGenerator, TinyScorer

CONSTS = dict(generator="tiny", generator_key="", method="svm", point="w", n=8 * CHUNK, ratio=0.2, cases=3,
              stop_at=0, seed=0, rng_order="seeded", alpha_scale=1.0, median_n=CHUNK, fit_judge="property_cnn",
              test_judges=("property_cnn", "evaluator"), hairstyle_judge="evaluator", jpeg=False, dropout=False,
              dropout_seed=0, nn_max_epochs=1, batch_size=50, image_batch=10, inference_path="exact",
              conditional=False, condition_side=(), workers=1, sweep_rows=("svm:w:1000",), sweep=False,
              threads=0, progress=False)


def tiny_inputs(profile, cfg, judges):
    g = TinyMidGenerator(z_dim=16, res=8)
    scorers = {"property_cnn": TinyScorer(g), "evaluator": TinyScorer(g, noise_std=0.01, seed=1)}
    return g, {"stage": "generator", "source": "tiny", "outputs_digest": "tiny"}, scorers, {}


@pytest.fixture
def profile(tmp_path):
    return Profile({"name": "tiny", "data_root": str(tmp_path / "data")})


def run(profile, **kw):
    cfg, _ = stage.resolve_settings(profile, {**CONSTS, **kw}, None)
    return stage.run_one(profile, cfg, progress=False, inputs=tiny_inputs)


def test_svm_run_writes_the_original_files_and_passes(profile, monkeypatch):
    monkeypatch.setitem(PASS_THRESHOLDS, "pose", 0.8)        # the tiny world: SVM |r| about 0.9 eyes, 0.85 pose
    monkeypatch.setitem(PASS_THRESHOLDS, "eyes", 0.85)
    m = run(profile)
    out = profile.data_root / "stage7" / "runs" / "svm_w_n4000_x1"
    assert (out / "metrics.json").is_file() and (out / "report.md").is_file()
    assert len(list((out / "property_score_vectors").glob("*_change_w_vector_*.csv"))) == 48
    res = pd.read_csv(out / "image_generation_report" / "test_result.csv")
    assert list(res.columns) == ["case", "vector_no", "passed", "group_name", "eyes_corr", "mouth_corr", "pose_corr",
                                 "sum_abs_corr"]
    stats = (out / "image_generation_report" / "test_statistics.csv").read_text().splitlines()[0]
    assert stats == ",eyes_corr_mean,mouth_corr_mean,pose_corr_mean,sum_abs_corr_mean,passed,passed_ratio"
    case = pd.read_csv(out / "inference_test_after_training" / "test_0000" / "case_000_000_result.csv")
    assert list(case.columns) == ["pm_idx", "eyes_pm", "mouth_pm", "pose_pm", "eyes_score", "mouth_score", "pose_score"]
    assert len(case) == 50
    # SVM directions decrease each property: every r is negative, and strong in the tiny world
    assert (res[["eyes_corr", "mouth_corr", "pose_corr"]] < -0.5).all().all()
    passes = int((res.passed == "O").sum())
    assert passes == 3 and m["judges"]["property_cnn"]["passes"] == passes
    # seeded, eval-mode judges: every saved passing row passes again
    assert m["qa"]["passing_by_judge"]["property_cnn"] == passes
    assert m["qa"]["of_those_passing_by_judge"]["property_cnn"] == passes
    agg = (profile.data_root / "stage7" / "test_result" / "test_result_svm_w.csv").read_text().splitlines()
    assert agg[0] == ",n,k,time,svm_eyes_acc,svm_mouth_acc,svm_pose_acc,eyes_mean_corr,mouth_mean_corr," \
                     "pose_mean_corr,sum_mean_corr" and len(agg) == 2
    assert (out / "visual_check.png").is_file() and (out / "case_best.png").is_file()


def test_finished_run_is_not_repeated_and_interrupted_test_resumes(profile):
    m1 = run(profile, cases=2)
    out = profile.data_root / "stage7" / "runs" / "svm_w_n4000_x1"
    (out / "metrics.json").unlink()
    mark = out / "inference_test_after_training" / "test_0001" / "case_judges.json"
    mark.unlink()                                            # case 1 was interrupted
    before = (out / "inference_test_after_training" / "test_0000" / "case_judges.json").stat().st_mtime_ns
    m2 = run(profile, cases=2)
    assert mark.is_file()
    assert (out / "inference_test_after_training" / "test_0000" / "case_judges.json").stat().st_mtime_ns == before
    assert m2["judges"]["property_cnn"]["mean_r"] == pytest.approx(m1["judges"]["property_cnn"]["mean_r"])
    assert run(profile, cases=2)["seconds"] == m2["seconds"]          # finished: read back


def test_samples_are_shared_prefixes(profile):
    run(profile, n=2 * CHUNK, cases=1)
    cache = profile.data_root / "stage7" / "samples"
    a = load_samples(cache, 700, "w", "property_cnn")
    b = load_samples(cache, 1000, "mapping_split2", "property_cnn")
    np.testing.assert_array_equal(a.z, b.z[:700])
    np.testing.assert_array_equal(a.scores["eyes"], b.scores["eyes"][:700])
    key = json.loads((cache / "key.json").read_text())
    assert key["seed"] == 0 and key["judges"] == ["evaluator", "property_cnn"]


@pytest.mark.parametrize("method", ["gradient", "mixed"])
def test_gradient_and_mixed_use_the_suffixed_names(profile, method):
    run(profile, method=method, point="mapping_split1", n=2 * CHUNK, cases=2)
    out = profile.data_root / "stage7" / "runs" / f"{method}_mapping_split1_n1000_x1"
    rep = out / "image_generation_report"
    assert (rep / "test_result_mapping_split1_1K.csv").is_file()
    assert (rep / "test_statistics_mapping_split1_1K.csv").is_file()
    assert (out / "inference_test_after_training" / "test_0000" / "case_0000_result.csv").is_file()
    assert (out / "models" / "stylegan_gen_vector_find_v9_nn_eyes.pth").is_file()
    head = pd.read_csv(rep / "test_result_mapping_split1_1K.csv").columns.tolist()
    assert head[:2] == (["case", "svm_group_name"] if method == "mixed" else ["case", "passed"])


def test_sweep_writes_one_table(profile):
    cfg, _ = stage.resolve_settings(profile, {**CONSTS, "sweep_rows": ("svm:w:1000", "svm:w:1000:2")}, None)
    from stages.vectorfind_sweep import run_sweep
    out = run_sweep(profile, dict(cfg, cases=1), lambda p, c, progress: stage.run_one(p, c, progress, tiny_inputs),
                    progress=False)
    table = pd.read_csv(profile.data_root / "stage7" / "sweep" / "sweep_table.csv")
    assert len(table) == 2 and list(table.alpha_scale) == [1.0, 2.0]
    assert len(out["rows"]) == 2


def test_original_rng_order_runs_without_the_cache(profile):
    m = run(profile, rng_order="original", n=2000, cases=1, dropout=True)
    out = profile.data_root / "stage7" / "runs" / "svm_w_n2000_x1_original"
    assert (out / "metrics.json").is_file() and m["settings"]["rng_order"] == "original"
    assert not (profile.data_root / "stage7" / "samples").exists()


def test_finished_run_refuses_a_changed_generator(profile, tmp_path):
    """A finished run read back only while its generator file is the one it was made from."""
    gen = tmp_path / "v9.pth"
    gen.write_bytes(b"first generator")

    def file_inputs(profile, cfg, judges):
        g, _, scorers, desc = tiny_inputs(profile, cfg, judges)
        return g, {"stage": "generator", "source": str(gen), "outputs_digest": stage.sha256_file(gen)}, scorers, desc

    cfg, _ = stage.resolve_settings(profile, {**CONSTS, "generator": str(gen), "cases": 1}, None)
    m = stage.run_one(profile, cfg, progress=False, inputs=file_inputs)
    assert stage.run_one(profile, cfg, progress=False, inputs=file_inputs)["seconds"] == m["seconds"]
    gen.write_bytes(b"another generator")
    with pytest.raises(Exception, match="made from another generator"):
        stage.run_one(profile, cfg, progress=False, inputs=file_inputs)


def test_conditional_run_projects_each_direction_off_the_other_two(profile, monkeypatch):
    monkeypatch.setitem(PASS_THRESHOLDS, "pose", 0.8)
    monkeypatch.setitem(PASS_THRESHOLDS, "eyes", 0.85)
    run(profile, cases=1)
    m = run(profile, cases=1, conditional=True)
    runs = profile.data_root / "stage7" / "runs"
    out = runs / "svm_w_n4000_x1_cond"
    assert m["settings"]["conditional"] and (out / "metrics.json").is_file()
    fitted = stage.DirectionSet.load(runs / "svm_w_n4000_x1" / "property_score_vectors", "w")
    cond = stage.DirectionSet.load(out / "property_score_vectors_conditional", "w")
    same = stage.DirectionSet.load(out / "property_score_vectors", "w")
    for g in ("hhhh", "lhlh"):
        v = {p: cond.vectors[(p, g)] for p in ("eyes", "mouth", "pose")}
        for p, q in (("eyes", "mouth"), ("eyes", "pose"), ("mouth", "pose")):
            f = {k: fitted.vectors[(k, g)] for k in (p, q)}
            assert abs(float(v[p] @ f[q])) < 1e-6 and abs(float(v[q] @ f[p])) < 1e-6
        np.testing.assert_array_equal(same.vectors[("eyes", g)], fitted.vectors[("eyes", g)])   # fitted files kept
        assert float(v["eyes"] @ fitted.vectors[("eyes", g)]) > 0.5                          # same sense


def test_two_workers_give_the_one_worker_files(profile, tmp_path):
    """Sample chunks and test cases made by two threads at once: the same cache, the same per-case
    records and original files, in the cases' order (the scorers must not depend on their calls' order:
    the tiny evaluator's noise stream does, so both judges here are noise-free)."""
    def stateless(profile, cfg, judges):
        g, rec, _, desc = tiny_inputs(profile, cfg, judges)
        return g, rec, {"property_cnn": TinyScorer(g), "evaluator": TinyScorer(g)}, desc

    def go(p, **kw):
        cfg, _ = stage.resolve_settings(p, {**CONSTS, "cases": 4, **kw}, None)
        return stage.run_one(p, cfg, progress=False, inputs=stateless)

    m1 = go(profile)
    other = Profile({"name": "tiny", "data_root": str(tmp_path / "data2")})
    m2 = go(other, workers=2)
    a, b = (p.data_root / "stage7" for p in (profile, other))
    for k in range(8):
        with np.load(a / "samples" / f"chunk_{k:05d}.npz") as x, np.load(b / "samples" / f"chunk_{k:05d}.npz") as y:
            assert all(np.array_equal(x[f], y[f]) for f in x.files)
    rep = "runs/svm_w_n4000_x1/image_generation_report/test_result.csv"
    assert (a / rep).read_text() == (b / rep).read_text()
    assert m1["judges"] == m2["judges"] and m1["qa"] == m2["qa"]


def test_ordered_map_keeps_order_and_stops_early():
    import threading
    import time as _t
    from stages.vectorfind_samples import ordered_map
    started = []

    def slow(x):
        started.append(x)
        _t.sleep(0.02 * (3 - x % 3))
        return x * 10, threading.get_ident()

    out = list(ordered_map(slow, range(7), workers=3))
    assert [r[0] for r in out] == [x * 10 for x in range(7)] and len({r[1] for r in out}) > 1
    started.clear()
    for r in ordered_map(slow, range(20), workers=2):
        if r[0] == 30:
            break
    assert max(started) <= 4                                  # at most one call beyond the stop was started


def test_conditional_on_side_readouts(profile):
    """--condition-side: each direction also orthogonal to the least-squares read-out of the named scores
    over the run's samples (the fitting judge's, or another cached judge's as judge/property)."""
    m = run(profile, cases=1, conditional=True, condition_side=("hair_color", "evaluator/background_mean"))
    out = profile.data_root / "stage7" / "runs" / "svm_w_n4000_x1_cond+hair_color+evaluator-background_mean"
    assert (out / "metrics.json").is_file()
    assert list(m["settings"]["condition_side"]) == ["hair_color", "evaluator/background_mean"]
    cache = profile.data_root / "stage7" / "samples"
    s = load_samples(cache, 4000, "w", "property_cnn")
    ev = load_samples(cache, 4000, "w", "evaluator")
    r = stage.readout_directions(s.mid, {"a": s.scores["hair_color"], "b": ev.scores["background_mean"]}, ("a", "b"))
    cond = stage.DirectionSet.load(out / "property_score_vectors_conditional", "w")
    for v in cond.vectors.values():
        assert all(abs(float(v @ u)) / np.linalg.norm(u) < 1e-6 for u in r)
    with pytest.raises(Exception, match="condition-side nothing"):
        run(profile, cases=1, conditional=True, condition_side=("nothing",))


def test_leak_size_from_partial_slopes():
    """leak_of's partial slopes on the grid; leak_size = q's move per α_p in q's spread over p's own."""
    from stages.vectorfind_report import leak_of, leak_size
    from vectorfind.cases import alpha_table
    t = alpha_table("svm")
    recs = []
    for c in range(5):
        base = {q: float(c) for q in ("eyes", "mouth", "pose", "hair_color", "hair_length", "background_mean")}
        s = {q: np.full(len(t), v) for q, v in base.items()}
        s["eyes"] = s["eyes"] - 2.0 * t["eyes_pm"].to_numpy()            # its own move: 2 per α
        s["mouth"] = s["mouth"] - 0.5 * t["eyes_pm"].to_numpy() - 1.0 * t["mouth_pm"].to_numpy()
        s["pose"] = s["pose"] + 1.0 * t["pose_pm"].to_numpy()
        recs.append(leak_of(t, s))
    assert recs[0]["slope"]["eyes->mouth"] == pytest.approx(-0.5) and recs[0]["slope"]["pose->mouth"] == pytest.approx(0)
    size = leak_size(recs)
    assert size["eyes->mouth"] == pytest.approx(0.25) and size["pose->eyes"] == pytest.approx(0, abs=1e-9)


def test_gradient_conditional_is_local_and_trains_side_nets(profile):
    """--conditional with the gradient method: each case's MLP gradients projected off the other two and
    off the --condition-side MLPs' gradients at that case (kept as models/…_nn_{q}.pth); off by default."""
    plain = run(profile, method="gradient", cases=1, n=CHUNK)
    m = run(profile, method="gradient", cases=1, n=CHUNK, conditional=True, condition_side=("hair_color",))
    runs = profile.data_root / "stage7" / "runs"
    out = runs / "gradient_w_n500_x1_cond+hair_color"
    assert (out / "models" / "stylegan_gen_vector_find_v9_nn_hair_color.pth").is_file()
    assert set(m["quality"]) == {"eyes", "mouth", "pose", "side hair_color"}
    assert "nn_hair_color" not in json.dumps(plain["quality"])
    a = pd.read_csv(runs / "gradient_w_n500_x1" / "inference_test_after_training" / "test_0000" / "case_0000_result.csv")
    b = pd.read_csv(out / "inference_test_after_training" / "test_0000" / "case_0000_result.csv")
    assert a[["eyes_pm", "mouth_pm", "pose_pm"]].equals(b[["eyes_pm", "mouth_pm", "pose_pm"]])
    assert not a.eyes_score.equals(b.eyes_score)                        # other directions, other images
    # the run's nets, loaded again and conditioned as the stage does: orthogonal to every other gradient
    import torch
    from vectorfind.gradient import GradientNets
    sd = {p: torch.load(out / "models" / f"stylegan_gen_vector_find_v9_nn_{p}.pth", weights_only=True)
          for p in ("eyes", "mouth", "pose", "hair_color")}
    nets = GradientNets.from_state_dicts("w", sd)
    side = nets.nets.pop("hair_color")
    mid = np.random.default_rng(0).standard_normal(nets.nets["eyes"].d).astype(np.float32)
    cond = GradientNets("w", nets.nets, side={"hair_color": side}, conditional=True).directions(mid)
    raw = {p: nets.directions(mid)[p] for p in ("eyes", "mouth", "pose")}
    raw["hair_color"] = GradientNets("w", {"eyes": side}).directions(mid)["eyes"]
    for p in ("eyes", "mouth", "pose"):
        assert all(abs(float(cond[p] @ raw[q])) < 1e-5 for q in raw if q != p)


def test_matched_oracle_uses_the_runs_grid_jpeg_and_own_moves(tmp_path):
    """The oracle on the run's terms: its α table, JPEG, each person's own values moved by α·L world stds;
    L from the run's and the fixed oracle's own slopes; kept per run and reused while its key holds."""
    from stages.vectorfind_oracle import LABEL_PER_ALPHA, matched_label_per_alpha, matched_oracle_leak
    from vectorfind.cases import alpha_table
    run_recs = [{"slope": {"eyes->eyes": -0.02, "mouth->mouth": 0.03, "pose->pose": -0.01}}] * 2
    fixed = [{"slope": {"eyes->eyes": 0.08, "mouth->mouth": 0.12, "pose->pose": 0.04}}] * 3
    per_alpha = matched_label_per_alpha(run_recs, fixed)
    assert per_alpha == pytest.approx({p: LABEL_PER_ALPHA / 4 for p in ("eyes", "mouth", "pose")})
    prof = Profile({"name": "w", "data_root": str(tmp_path), "world_seed": 0, "resolution": 32,
                    "generator": {"z_dim": 256}})
    calls = []

    def judge(images):          # a stand-in judge: brightness of the eye band, the mouth band, left-right asymmetry
        calls.append(images.shape)
        x = images.numpy().mean(axis=1)
        return {"eyes": x[:, 12:16].mean(axis=(1, 2)), "mouth": x[:, 20:24].mean(axis=(1, 2)),
                "pose": (x[:, :, :16] - x[:, :, 16:]).mean(axis=(1, 2)), "hair_color": x[:, :4].mean(axis=(1, 2))}

    table = alpha_table("gradient", 1.5)
    still = matched_oracle_leak(prof, tmp_path, {"evaluator": judge}, table, True, {p: 0.0 for p in per_alpha}, 2)
    assert calls == [(50, 3, 32, 32)] * 2 and still["key"]["jpeg"] is True
    assert still["key"]["alphas"]["mouth"][:10] == [-2.4000000000000004] * 10       # the gradient grid × 1.5
    for rec in still["judges"]["evaluator"]:            # L = 0: the person does not move at all
        assert all(v < 1e-12 for v in rec["std"].values())
    moved = matched_oracle_leak(prof, tmp_path, {"evaluator": judge}, table, True, {p: 0.3 for p in per_alpha}, 2)
    assert len(calls) == 4 and any(rec["std"]["eyes"] > 1e-3 for rec in moved["judges"]["evaluator"])
    again = matched_oracle_leak(prof, tmp_path, {"evaluator": judge}, table, True, {p: 0.3 for p in per_alpha}, 2)
    assert len(calls) == 4 and again == moved                                          # reused: same key


def test_leak_excess_sets_ours_beside_both_oracles():
    from stages.vectorfind_report import leak_excess
    m = {"leak_identity": {"evaluator": {"mean_abs_leak_r": {"eyes->hair_color": 0.58, "eyes->mouth": 0.09}}},
         "oracle_leak_identity": {"evaluator": {"mean_abs_leak_r": {"eyes->hair_color": 0.39, "eyes->mouth": 0.02}}},
         "oracle_matched_leak_identity": {"evaluator": {"mean_abs_leak_r": {"eyes->hair_color": 0.41}}}}
    ex = leak_excess(m, "evaluator")
    assert ex["eyes->hair_color"] == pytest.approx({"ours": 0.58, "oracle_fixed": 0.39, "excess_fixed": 0.19,
                                                    "oracle_matched": 0.41, "excess_matched": 0.17})
    assert set(ex["eyes->mouth"]) == {"ours", "oracle_fixed", "excess_fixed"}          # no matched figure: not shown


def test_matched_oracle_refines_its_moves_toward_the_runs(tmp_path):
    from stages.vectorfind_oracle import matched_oracle_leak
    from stages.vectorfind_report import own_slope
    from vectorfind.cases import alpha_table
    prof = Profile({"name": "w", "data_root": str(tmp_path), "world_seed": 0, "resolution": 32,
                    "generator": {"z_dim": 256}})

    def judge(images):          # the eye band's brightness stands in for eyes (so do the others)
        x = images.numpy().mean(axis=1)
        return {q: x[:, 12:16].mean(axis=(1, 2)) * (i + 1) for i, q in enumerate(("eyes", "mouth", "pose"))}

    table = alpha_table("svm", 1.5)
    first = matched_oracle_leak(prof, tmp_path / "a", {"evaluator": judge}, table, False,
                                {p: 0.2 for p in ("eyes", "mouth", "pose")}, 2)
    got = own_slope(first["judges"]["evaluator"], "eyes")
    assert got > 0
    want = {"eyes": 0.5 * got, "mouth": 1.0, "pose": 1.0}
    ref = matched_oracle_leak(prof, tmp_path / "b", {"evaluator": judge}, table, False,
                              {p: 0.2 for p in ("eyes", "mouth", "pose")}, 2, target=want, judge="evaluator", refine=1)
    assert ref["label_per_alpha"]["eyes"] == pytest.approx(0.1)              # eyes: linear here, so halved exactly
    assert own_slope(ref["judges"]["evaluator"], "eyes") == pytest.approx(0.5 * got, rel=0.2)
    assert ref["key"]["refine"] == 1 and ref["key"]["label_per_alpha"]["eyes"] == 0.2


def tiny_parser(profile):
    """Class ids of the tiny 8-px images: eyes in the top-left corner, the mouth at the bottom."""
    def parse(u8):
        lab = np.zeros(u8.shape[:3], np.int64)
        lab[:, 1, 1], lab[:, 6, 3:5] = 4, 8
        return lab
    return parse


def test_pixel_local_run_writes_local_svm_directions_and_shares_the_metric(profile, monkeypatch):
    """``pixel_local``: the conditional SVM set made pixel-local per group (vectorfind.pixel_local on the
    conditional files and the kept metric), the metric kept once per point and reused by another n; the
    gradient method has no SVM set and runs without it."""
    calls = []
    real = stage.vectorfind_local.pixel_metrics
    monkeypatch.setattr(stage, "region_parser", tiny_parser)
    monkeypatch.setattr(stage.vectorfind_local, "pixel_metrics", lambda *a, **k: calls.append(1) or real(*a, **k))
    kw = dict(cases=1, conditional=True, pixel_local=True, pixel_local_lambda=0.001, pixel_local_samples=4)
    m = run(profile, **kw)
    out = profile.data_root / "stage7" / "runs" / "svm_w_n4000_x1_cond_pl0.001"
    assert m["settings"]["pixel_local"] and "pixel_local" in m["seconds"]
    cond = stage.DirectionSet.load(out / "property_score_vectors_conditional", "w")
    local = stage.DirectionSet.load(out / "property_score_vectors_pixel_local", "w")
    with np.load(profile.data_root / "stage7" / "pixel_local" / "w_k4.npz") as f:
        metrics = {k: f[k] for k in f.files}
    assert sorted(metrics) == ["all", "eyes", "mouth"]
    for g in ("hhhh", "lhlh"):
        want = local_directions(cond.for_group(g), metrics, 0.001)
        for p in ("eyes", "mouth", "pose"):
            np.testing.assert_allclose(local.vectors[(p, g)], want[p], rtol=1e-6)      # float32 CSVs
        np.testing.assert_allclose(local.vectors[("pose", g)], cond.vectors[("pose", g)], rtol=1e-6)
        assert float(local.vectors[("eyes", g)] @ cond.vectors[("eyes", g)]) > 0
    folder = profile.data_root / "stage7" / "pixel_local"
    assert sorted(f.name for f in folder.iterdir()) == ["w_k4.json", "w_k4.npz"]
    run(profile, n=4 * CHUNK, **kw)                                           # another n, the same metric
    assert len(calls) == 1
    run(profile, method="gradient", n=2 * CHUNK, **kw)
    assert (profile.data_root / "stage7" / "runs" / "gradient_w_n1000_x1_cond").is_dir() and len(calls) == 1
    g, grec, _, _ = tiny_inputs(profile, None, ())
    mids = load_samples(profile.data_root / "stage7" / "samples", 4, "w", "property_cnn", 0).mid
    two = stage.vectorfind_local.cached_metrics(profile.data_root / "other", g, grec, mids, "w", tiny_parser(profile),
                                                0, progress=False, workers=2)
    with np.load(folder / "w_k4.npz") as f:                                  # two workers: the same sums
        for p in ("eyes", "mouth"):
            np.testing.assert_array_equal(two[p], f[p])
