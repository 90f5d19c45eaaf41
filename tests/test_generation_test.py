"""Generation test (spec 04 §5.5, §7): grid, statistics against a known fake pair, real small models, files."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from cnn.property_score_cnn import P3, P7, PropertyScoreCNN
from stylegan import GeneratorConfig
from stylegan_modified import ConditionalSpec, build_generator
from evaluation.generation import GenerationTestSettings, label_grid, label_vectors, pearson_rows, run_generation_test
from evaluation.judges import EvaluatorJudge, GeneratorAdapter, PropertyCNNJudge
from tests.single_thread import one_thread  # noqa: F401  (autouse)


def test_label_grid_is_the_originals_50_labels_in_its_order():
    s = GenerationTestSettings()
    g = label_grid(s)
    assert g.shape == (50, 3) and g.dtype == np.float32
    e, m, p = (-1.8, 1.8), (-1.2, -0.6, 0.0, 0.8, 1.6), (-1.2, 0.0, 1.2, 2.4, 3.6)
    for mi in range(5):
        for ei in range(2):
            for pi in range(5):
                assert np.allclose(g[10 * mi + 5 * ei + pi], [e[ei], m[mi], p[pi]])
    full = label_vectors(g, P7, {"hair_color": 0.5})
    assert full.shape == (50, 7) and np.allclose(full[:, [0, 3, 4]], g) and np.all(full[:, 1] == 0.5)
    assert np.all(full[:, [2, 5, 6]] == 0)
    assert np.allclose(label_vectors(g, P3), g)
    with pytest.raises(ValueError, match=r"lack the controlled properties \['pose'\]"):
        label_vectors(g, ("eyes", "mouth"))
    assert s.reference() == {"eyes": 1.8, "mouth": 0.0, "pose": 0.0}


def test_pearson_rows_matches_numpy_and_is_zero_for_constant_input():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=20), rng.normal(size=(3, 20))
    assert np.allclose(pearson_rows(x, y), [np.corrcoef(x, r)[0, 1] for r in y])
    assert pearson_rows(x, np.ones((1, 20)))[0] == 0.0


class FakeGenerator:
    """Writes label- and z-dependent numbers into pixels that :class:`FakeJudge` reads back."""
    label_names = P7
    z_dim = 4

    def __init__(self):
        self.calls = []

    def render(self, z, label):
        self.calls.append(len(z))
        img = torch.zeros(len(z), 3, 8, 8)
        eyes, mouth, pose = label[:, 0], label[:, 3], label[:, 4]
        img[:, 0, 0, 0] = eyes                                   # exact
        img[:, 0, 0, 1] = 0.5 * mouth + 0.3                      # r 1, MAE |0.3 - 0.5 m| averaged
        img[:, 0, 0, 2] = pose * torch.sign(z[:, 3]) + 0.2 * eyes   # r depends on z; eyes leaks into pose
        img[:, 0, 0, 3] = z[:, 0]                                # hair colour: identity, constant per z
        img[:, 0, 0, 4] = z[:, 1] + 0.1 * mouth                  # hair length leaks from mouth
        img[:, 0, 0, 5] = z[:, 2]
        return img


class FakeJudge:
    name = "fake"

    def measure(self, images):
        v = images[:, 0, 0, :6].numpy()
        return {"eyes": v[:, 0], "mouth": v[:, 1], "pose": v[:, 2], "hair_color": v[:, 3], "hair_length": v[:, 4],
                "background_mean": v[:, 5]}


def test_known_fake_pair_gives_the_expected_statistics(tmp_path):
    z = np.array([[0.5, 1.0, -1.0, 1.0], [1.5, -1.0, 0.0, -1.0], [-0.5, 0.0, 2.0, 1.0]], dtype=np.float32)
    fake = FakeGenerator()
    s = GenerationTestSettings(batch_size=40, round_decimals=None)
    m = run_generation_test(fake, [FakeJudge()], tmp_path, s, z=z, progress=False)
    t = pd.read_csv(tmp_path / "result_each_z.csv")
    g = label_grid(s).astype(np.float64)
    e, mo, p = g[:, 0], g[:, 1], g[:, 2]
    for j, sign in enumerate(np.sign(z[:, 3])):
        pose_meas = p * sign + 0.2 * e
        assert np.isclose(t.loc[j, "eyes_corr"], 1.0) and np.isclose(t.loc[j, "eyes_mae"], 0.0)
        assert np.isclose(t.loc[j, "mouth_corr"], 1.0)
        assert np.isclose(t.loc[j, "mouth_mae"], np.abs(0.5 * mo + 0.3 - mo).mean())
        assert np.isclose(t.loc[j, "mouth_mse"], ((0.5 * mo + 0.3 - mo) ** 2).mean())
        assert np.isclose(t.loc[j, "pose_corr"], np.corrcoef(p, pose_meas)[0, 1])
        assert np.isclose(t.loc[j, "pose_mae"], np.abs(pose_meas - p).mean())
        assert np.isclose(t.loc[j, "leak_eyes_to_pose"], abs(np.corrcoef(e, pose_meas)[0, 1]))
        assert np.isclose(t.loc[j, "leak_mouth_to_hair_length"], 1.0)
        assert np.isclose(t.loc[j, "leak_eyes_to_hair_length"], 0.0, atol=1e-12)
        assert t.loc[j, "hair_color_within_std"] == 0.0 and t.loc[j, "hair_color_stability"] == 0.0
        assert np.isclose(t.loc[j, "hair_length_within_std"], 0.1 * mo.std())
    hl_means = z[:, 1] + 0.1 * mo.mean()
    assert np.isclose(t.loc[0, "hair_length_stability"], 0.1 * mo.std() / hl_means.std())
    # mouth MAE 0.48 is within 0.6, pose r is 0.978 for z 0 and 2 (sign +) and negative for z 1
    assert list(t["passed"]) == [True, False, True]
    assert m["passes"] == 2 and m["judges"]["fake"]["passed_z"] == [0, 2] and m["best_z"] in (0, 2)
    assert np.isclose(m["judges"]["fake"]["best"]["pose_corr"], t["pose_corr"].max())
    assert np.isclose(m["judges"]["fake"]["mean"]["mouth_mae"], t["mouth_mae"].mean())
    assert m["n_images"] == 150 and m["z_source"] == "given"
    assert sum(fake.calls[:4]) == 150 and max(fake.calls) == 40            # batched rendering
    strict = GenerationTestSettings(batch_size=50, round_decimals=None, max_mae={"eyes": 1.0, "mouth": 0.4,
                                                                                   "pose": 1.4})
    assert run_generation_test(FakeGenerator(), [FakeJudge()], tmp_path / "strict", strict, z=z,
                               progress=False)["passes"] == 0              # thresholds are parameters


def test_files_report_and_per_epoch_history(tmp_path):
    s = GenerationTestSettings(n_z=3, z_seed=5, batch_size=50)
    for epoch in (0, 1, 1):                                    # epoch 1 twice: its row is replaced
        m = run_generation_test(FakeGenerator(), [FakeJudge()], tmp_path / f"epoch_{epoch:04d}", s, epoch=epoch,
                                progress=False)
    out = tmp_path / "epoch_0001"
    for f in ("z.csv", "scores.csv", "result_each_z.csv", "metrics.json", "report.md", "best_z_grid.png",
              "best_z_all_labels.png", "best_z_scatter.png", "r_per_epoch.png"):
        assert (out / f).is_file(), f
    hist = pd.read_csv(tmp_path / "generation_test_history.csv")
    assert list(hist["epoch"]) == [0, 1] and list(hist["judge"]) == ["fake", "fake"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["epoch"] == 1 and saved["settings"]["z_seed"] == 5 and saved["settings"]["min_r"]["mouth"] == 0.85
    report = (out / "report.md").read_text()
    assert "![grid](best_z_grid.png)" in report and "r per epoch" in report
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 150 and {"z_idx", "label_idx", "eyes_label", "fake_eyes", "fake_hair_color"} <= set(scores)
    zc = pd.read_csv(out / "z.csv")
    from stylegan.sampling import latent_z
    assert np.array_equal(zc[[f"z_{i}" for i in range(4)]].to_numpy(np.float32), latent_z(range(3), 4, 5))


GEN_CFG = GeneratorConfig(resolution=64, z_dim=32, w_dim=32, mapping_layers=2, mapping_fmaps=32,
                          fmaps_base=256, fmaps_max=32)


def small_models():
    g = build_generator(GEN_CFG, ConditionalSpec(P7, 8), seed=1)
    torch.manual_seed(0)
    return g, PropertyScoreCNN(64, 0.125, 1, 16)


def test_real_small_models_seeded_batched_and_without_autograd(tmp_path):
    g, cnn = small_models()
    g.train()
    cnn.train()
    w_avg = g.truncation.w_avg.clone()
    s1 = GenerationTestSettings(n_z=2, batch_size=1, round_decimals=None)
    s50 = GenerationTestSettings(n_z=2, batch_size=50, round_decimals=None)
    a = run_generation_test(g, [PropertyCNNJudge(cnn)], tmp_path / "a", s1, progress=False)
    b = run_generation_test(g, [PropertyCNNJudge(cnn)], tmp_path / "b", s50, progress=False)
    c = run_generation_test(g, [PropertyCNNJudge(cnn)], tmp_path / "c", s50, progress=False)
    sa, sb, sc = (pd.read_csv(tmp_path / k / "scores.csv") for k in "abc")
    cols = [f"property_cnn_{p}" for p in P7]
    assert np.allclose(sa[cols], sb[cols], atol=1e-4)                  # batched == one at a time
    assert sb.equals(sc) and pd.read_csv(tmp_path / "b" / "result_each_z.csv").equals(
        pd.read_csv(tmp_path / "c" / "result_each_z.csv"))             # same seed, same numbers
    assert b["judges"] == c["judges"] and a["passes"] == b["passes"]
    other = run_generation_test(g, [PropertyCNNJudge(cnn)], tmp_path / "d",
                                GenerationTestSettings(n_z=2, z_seed=1, batch_size=50), progress=False)
    assert not pd.read_csv(tmp_path / "d" / "z.csv").equals(pd.read_csv(tmp_path / "b" / "z.csv"))
    assert other["settings"]["z_seed"] == 1
    assert all(p.grad is None for p in list(g.parameters()) + list(cnn.parameters()))
    assert g.training and cnn.training and torch.equal(g.truncation.w_avg, w_avg)   # modes kept, w_avg untouched
    img = g.render(torch.randn(2, 32), torch.zeros(2, 7))
    assert torch.is_inference(img) and img.grad_fn is None


def test_relaxed_inference_path_renders_within_a_grey_level_and_restores_the_models_plan(tmp_path):
    """inference_path "relaxed" (the stage-5 scripts' default): the renders take the fast plan, the
    judges' readings stay within rounding of the exact path's, the model's own plan comes back."""
    from stylegan.sampling import DEFAULT_PLAN
    g, cnn = small_models()
    g.eval()
    cnn.eval()
    ex = run_generation_test(g, [PropertyCNNJudge(cnn)], tmp_path / "exact",
                             GenerationTestSettings(n_z=2, round_decimals=None), progress=False)
    rx = run_generation_test(g, [PropertyCNNJudge(cnn)], tmp_path / "relaxed",
                             GenerationTestSettings(n_z=2, round_decimals=None, inference_path="relaxed"),
                             progress=False)
    assert g.synthesis.default_plan == DEFAULT_PLAN
    assert ex["settings"]["inference_path"] == "exact" and rx["settings"]["inference_path"] == "relaxed"
    se, sr = (pd.read_csv(tmp_path / k / "scores.csv") for k in ("exact", "relaxed"))
    cols = [f"property_cnn_{p}" for p in P7]
    assert np.abs(se[cols].to_numpy() - sr[cols].to_numpy()).max() < 2e-3
    with pytest.raises(ValueError, match="inference_path"):
        GenerationTestSettings(inference_path="fast").validate()


def test_dropout_judge_option_is_noisy_but_seeded():
    _, cnn = small_models()
    cnn.eval()
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    ev = PropertyCNNJudge(cnn)
    assert np.array_equal(ev.measure(x)["eyes"], ev.measure(x)["eyes"])
    d1, d2 = PropertyCNNJudge(cnn, dropout=True, dropout_seed=3), PropertyCNNJudge(cnn, dropout=True, dropout_seed=3)
    first = d1.measure(x)["eyes"]
    assert np.array_equal(first, d2.measure(x)["eyes"]) and not np.array_equal(first, d1.measure(x)["eyes"])
    assert not cnn.training


def test_adapter_and_given_z_for_the_cvae_path(tmp_path):
    g, cnn = small_models()
    adapter = GeneratorAdapter(lambda z, l: g.render(z, l), g.label_names, 32)
    z = torch.randn(2, 32)
    m = run_generation_test(adapter, [PropertyCNNJudge(cnn)], tmp_path, GenerationTestSettings(batch_size=50), z=z,
                            progress=False)
    assert m["n_z"] == 2 and m["z_source"] == "given"
    assert np.allclose(pd.read_csv(tmp_path / "z.csv").iloc[:, 1:].to_numpy(np.float32), z.numpy())
    with pytest.raises(ValueError, match=r"z must have shape \[n_z, 32\]"):
        run_generation_test(adapter, [PropertyCNNJudge(cnn)], tmp_path, z=torch.randn(2, 8), progress=False)
    with pytest.raises(ValueError, match="distinct names"):
        run_generation_test(adapter, [PropertyCNNJudge(cnn), PropertyCNNJudge(cnn)], tmp_path, progress=False)


def test_synthface_evaluator_as_second_judge(tmp_path):
    from pipeline.checkpoint import read_checkpoint
    from stylegan.generator import postprocess
    from synthface.evaluate_generator import EVALUATOR_WEIGHTS
    from synthface.evaluator import Evaluator
    if not EVALUATOR_WEIGHTS.is_file():
        pytest.skip(f"{EVALUATOR_WEIGHTS} is not there (being retrained)")
    ev = Evaluator.from_state(read_checkpoint(EVALUATOR_WEIGHTS))
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    raw = ev.predict(postprocess(x))
    judge = EvaluatorJudge(ev, calibration={"pose": (-2.0, 1.0)})
    out = judge.measure(x)
    assert {"eyes", "mouth", "pose", "hair_color", "hair_length", "background_mean", "background_std", "hairstyle",
            "female", "glasses", "old", "quality_defect"} == set(out)
    assert np.allclose(out["eyes"], raw["eyes_open"], atol=1e-5) and np.allclose(out["background_mean"], raw["bg_mean"],
                                                                                  atol=1e-5)
    assert np.allclose(out["pose"], raw["pose"] * -2.0 + 1.0, atol=1e-5)
    g, cnn = small_models()
    m = run_generation_test(g, [PropertyCNNJudge(cnn), EvaluatorJudge(ev)], tmp_path,
                            GenerationTestSettings(n_z=2, batch_size=50), progress=False)
    assert set(m["judges"]) == {"property_cnn", "evaluator"}
    assert m["judge_info"]["property_cnn"]["mode"] == "eval" and "calibration" in m["judge_info"]["evaluator"]
    t = pd.read_csv(tmp_path / "result_each_z.csv")
    assert {"eyes_corr", "evaluator_eyes_corr", "evaluator_old_stability", "evaluator_glasses_within_std"} <= set(t)
    assert "old" in m["judges"]["evaluator"]["identity_mean_within_std"]


def test_evaluator_calibration_is_cached_per_content(tmp_path, monkeypatch):
    """``cache_dir``: a second call with the same evaluator, images and labels reads the stored fit (the
    same numbers, no prediction); other labels are another key, computed afresh."""
    from pipeline.checkpoint import read_checkpoint
    from synthface.evaluate_generator import EVALUATOR_WEIGHTS
    from synthface.evaluator import Evaluator
    from evaluation.judges import evaluator_calibration
    if not EVALUATOR_WEIGHTS.is_file():
        pytest.skip(f"{EVALUATOR_WEIGHTS} is not there (being retrained)")
    ev = Evaluator.from_state(read_checkpoint(EVALUATOR_WEIGHTS))
    gen = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (12, 3, 128, 128), dtype=torch.uint8, generator=gen)
    labels = np.random.default_rng(0).standard_normal((12, len(P7))).astype(np.float32)
    plain = evaluator_calibration(ev, imgs, labels, P7)
    first = evaluator_calibration(ev, imgs, labels, P7, cache_dir=tmp_path)
    assert first == plain and set(first) == set(P7) and len(list(tmp_path.glob("*.json"))) == 1
    calls = []
    monkeypatch.setattr(ev, "predict", lambda *a, **k: calls.append(1) or Evaluator.predict(ev, *a, **k))
    assert evaluator_calibration(ev, imgs, labels, P7, cache_dir=tmp_path) == first and not calls
    other = evaluator_calibration(ev, imgs, labels[::-1].copy(), P7, cache_dir=tmp_path)
    assert calls and other != first and len(list(tmp_path.glob("*.json"))) == 2
