"""vectorfind: the case test (α grids, loop order, pass rule) and the original's output files."""
import numpy as np
import pandas as pd
import pytest
import torch

from tests.vectorfind_tiny import TinyMidGenerator, TinyScorer
from vectorfind.cases import (ALPHA_GRIDS, CaseResult, alpha_table, pass_gaps, passes, pearson, run_case,
                                  run_case_test, visual_check_mids)
from vectorfind.directions import DirectionSet, unit_float32
from vectorfind.files import (aggregate_file_name, aggregate_row, append_aggregate, case_file_name, case_image_name,
                              original_image_name, report_file_names, result_frame, statistics_frame,
                              write_case, write_test_report)
from vectorfind.gradient import GradientNets, PropertyMLP
from vectorfind.groups import GROUP_ORDER, Medians
from vectorfind.sampling import case_latents


def _oracle_svm(dim: int = 12) -> DirectionSet:
    """Directions the tiny generator obeys exactly: −e0, −e3, −e4 (the SVM sign) in every group."""
    ds = DirectionSet("w")
    for p, i in (("eyes", 0), ("mouth", 3), ("pose", 4)):
        for g in GROUP_ORDER:
            v = np.zeros(dim)
            v[i] = -1.0
            ds.add(p, g, unit_float32(v))
    return ds


def _result(case, corr, group="hhhh"):
    t = alpha_table("svm")
    for p in ("eyes", "mouth", "pose"):
        t[f"{p}_score"] = np.round(t[f"{p}_pm"] * 0.5 + 0.1, 4)
    return CaseResult(case, group, corr, passes(corr), t, np.full(512, 0.123456, np.float32),
                      np.zeros(7, np.float32))


def test_alpha_grid_loop_order_and_50_rows():
    t = alpha_table("svm")
    assert len(t) == 50 and list(t.columns) == ["pm_idx", "eyes_pm", "mouth_pm", "pose_pm"]
    assert t.iloc[0][["eyes_pm", "mouth_pm", "pose_pm"]].tolist() == [-1.2, -1.8, -1.8]
    assert t.iloc[1][["eyes_pm", "mouth_pm", "pose_pm"]].tolist() == [-1.2, -1.8, -1.2]   # pose innermost
    assert t.iloc[5][["eyes_pm", "mouth_pm"]].tolist() == [1.2, -1.8]                      # then eyes
    assert t.iloc[10][["eyes_pm", "mouth_pm", "pose_pm"]].tolist() == [-1.2, -0.9, -1.8]   # mouth outermost
    g = alpha_table("gradient")
    assert sorted(set(g.mouth_pm)) == [-1.6, -0.8, 0.0, 0.8, 1.6] and sorted(set(g.pose_pm)) == [-1.4, -0.7, 0, 0.7, 1.4]
    assert ALPHA_GRIDS["mixed"] == ALPHA_GRIDS["svm"]
    assert alpha_table("svm", 2.0).mouth_pm.max() == 3.6
    with pytest.raises(ValueError):
        alpha_table("nope")


def test_pass_rule_on_unrounded_r():
    assert passes({"eyes": -0.92, "mouth": 0.88, "pose": -0.88})
    # 0.91996 rounds to 0.92 in the CSV but fails the rule
    assert not passes({"eyes": 0.91996, "mouth": 0.95, "pose": 0.95})
    assert not passes({"eyes": 0.95, "mouth": 0.87999, "pose": 0.95})
    assert not passes({"eyes": float("nan"), "mouth": 0.95, "pose": 0.95})
    gaps = pass_gaps({"eyes": -0.9, "mouth": 0.95, "pose": 0.5})
    assert gaps["eyes"] == pytest.approx(0.02) and gaps["mouth"] == 0 and gaps["pose"] == pytest.approx(0.38)
    assert np.isnan(pearson([1, 2, 3], [5, 5, 5]))
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(np.corrcoef([1, 2, 3], [2, 4, 7])[0, 1], abs=0)


def test_svm_case_with_exact_directions_passes_with_negative_r():
    gen = TinyMidGenerator()
    sc = TinyScorer(gen)
    z, label = case_latents(range(2), gen.z_dim, gen.label_dim, seed=0)
    res = run_case_test(gen, sc, "w", "svm", z, label, svm=_oracle_svm(), medians=Medians(0, 0, 0, 0), jpeg=False)
    assert [r.case for r in res] == [0, 1]
    for r in res:
        assert r.passed and all(r.corr[p] < -0.99 for p in ("eyes", "mouth", "pose")), r.corr
        # scores rounded to 4 dp; eyes score = w0 − α_eyes (up to uint8 steps)
        assert np.array_equal(r.table.eyes_score, np.round(r.table.eyes_score, 4))
        delta = r.table.eyes_score[r.table.eyes_pm > 0].mean() - r.table.eyes_score[r.table.eyes_pm < 0].mean()
        assert delta == pytest.approx(-2.4, abs=0.1)
        assert r.group in GROUP_ORDER
    # a saved group replaces the measured one; stop_at stops after the pass that reaches it
    res2 = run_case_test(gen, sc, "w", "svm", z, label, svm=_oracle_svm(), groups=["llll", "hhhh"], stop_at=1)
    assert len(res2) == 1 and res2[0].group == "llll"


def test_noisy_judge_fails_and_jpeg_option_runs():
    gen = TinyMidGenerator()
    z, label = case_latents([5], gen.z_dim, gen.label_dim, seed=0)
    r = run_case(gen, TinyScorer(gen, noise_std=3.0), "w", "svm", 5, z[0], label[0], svm=_oracle_svm(),
                 group="hlhl", jpeg=True, keep_images=True)
    assert not r.passed and r.images.shape == (50, 8, 8, 3) and r.images.dtype == np.uint8
    assert r.group == "hlhl" and set(r.other_scores) >= {"hair_color", "hairstyle"}


def test_gradient_and_mixed_cases_use_gradients_at_the_case():
    gen = TinyMidGenerator()
    sc = TinyScorer(gen)
    torch.manual_seed(0)
    nets = GradientNets("w", {p: PropertyMLP(12) for p in ("eyes", "mouth", "pose")})
    z, label = case_latents([0], gen.z_dim, gen.label_dim, seed=0)
    r = run_case(gen, sc, "w", "gradient", 0, z[0], label[0], nets=nets, jpeg=False)
    assert r.group is None and len(r.table) == 50 and set(r.table.mouth_pm) == {-1.6, -0.8, 0.0, 0.8, 1.6}
    m = run_case(gen, sc, "w", "mixed", 0, z[0], label[0], nets=nets, svm=_oracle_svm(), medians=Medians(0, 0, 0, 0),
                 jpeg=False)
    # mouth / pose by the exact SVM directions; the random eyes net's gradient leaks into them a little
    assert m.corr["mouth"] < -0.95 and m.corr["pose"] < -0.7 and m.group in GROUP_ORDER
    assert m.corr["eyes"] == pytest.approx(r.corr["eyes"], abs=0.05)      # same eyes gradient, other edits differ


def test_visual_check_mids():
    mids, labels = visual_check_mids(np.zeros(12, np.float32), _oracle_svm().for_group("hhhh"))
    assert mids.shape == (12, 12) and labels[0] == ("eyes", -2.0) and labels[-1] == ("pose", 2.0)
    assert mids[0, 0] == 2.0 and mids[4, 3] == 2.0


def test_file_names_are_the_originals():
    assert case_file_name("svm", 7) == "case_007_000_result.csv"
    assert case_file_name("gradient", 7) == "case_0007_result.csv" == case_file_name("mixed", 7)
    assert case_image_name("svm", 7, 12) == "case_007_000_pm_012.jpg"
    assert case_image_name("mixed", 7, 12) == "case_0007_pm_0012.jpg"
    assert original_image_name(3) == "original_case_03_00.jpg"
    assert report_file_names("svm", "w", 20000)["test_result"] == "test_result.csv"
    g = report_file_names("gradient", "mapping_split1", 20000)
    assert g["test_statistics"] == "test_statistics_mapping_split1_20K.csv"
    assert g["latent_codes_all"] == "latent_codes_all_mapping_split1_20K.csv"
    assert aggregate_file_name("svm", "mapping_split2") == "test_result_svm_mapping_split2.csv"
    assert aggregate_file_name("gradient", "w") == "test_result_gradient_w.csv"
    assert aggregate_file_name("mixed", "mapping_split1") == "test_result_final.csv"
    assert aggregate_file_name("mixed", "mapping_split1", final=True, qa=True) == "test_result_true_final_qa.csv"
    assert aggregate_file_name("svm", "mapping_split2", final=True, qa=True) == "test_result_true_final_svm_ms2_qa.csv"


def test_report_files_exact_headers_and_values(tmp_path):
    results = [_result(0, {"eyes": -0.93456, "mouth": -0.88004, "pose": -0.91}),
               _result(1, {"eyes": -0.5, "mouth": 0.2, "pose": -0.87996}, "lllh")]
    paths = write_test_report(tmp_path, "svm", "mapping_split2", 240000, results)
    head = {k: p.read_text().splitlines()[0] for k, p in paths.items()}
    assert head["test_result"] == "case,vector_no,passed,group_name,eyes_corr,mouth_corr,pose_corr,sum_abs_corr"
    assert head["test_statistics"] == ",eyes_corr_mean,mouth_corr_mean,pose_corr_mean,sum_abs_corr_mean,passed,passed_ratio"
    assert head["latent_codes_part1"] == ",".join(map(str, range(512)))
    assert head["latent_codes_part2"] == "0,1,2,3,4,5,6" and head["latent_codes_all"].endswith(",518")
    assert paths["latent_codes_part1"].read_text().splitlines()[1].startswith("0.1235,0.1235,")
    tr = pd.read_csv(paths["test_result"])
    assert tr.passed.tolist() == ["O", "X"] and tr.eyes_corr.tolist() == [-0.9346, -0.5]
    assert tr.pose_corr.tolist() == [-0.91, -0.88] and tr.group_name.tolist() == ["hhhh", "lllh"]
    assert tr.sum_abs_corr.tolist() == [round(0.9346 + 0.88 + 0.91, 4), round(0.5 + 0.2 + 0.88, 4)]
    st = pd.read_csv(paths["test_statistics"], index_col=0)
    assert st.eyes_corr_mean[0] == round((-0.9346 - 0.5) / 2, 4) and st.passed[0] == 1 and st.passed_ratio[0] == 0.5
    assert st.sum_abs_corr_mean[0] == round((2.7246 + 1.58) / 2, 4)
    assert result_frame("gradient", results).columns.tolist() == [
        "case", "passed", "eyes_corr", "mouth_corr", "pose_corr", "sum_abs_corr"]
    mixed = result_frame("mixed", results)
    assert mixed.columns.tolist() == ["case", "svm_group_name", "passed", "eyes_corr", "mouth_corr", "pose_corr",
                                      "sum_abs_corr"]
    assert (tmp_path / "test_result.csv").exists()          # SVM: no suffix
    p = write_case(tmp_path / "cases", "gradient", results[0])
    assert p.relative_to(tmp_path).as_posix() == "cases/test_0000/case_0000_result.csv"
    assert p.read_text().splitlines()[0] == "pm_idx,eyes_pm,mouth_pm,pose_pm,eyes_score,mouth_score,pose_score"


def test_aggregate_logs_headers_and_rules(tmp_path):
    st = pd.DataFrame([{"eyes_corr_mean": -0.8726, "mouth_corr_mean": -0.8443, "pose_corr_mean": -0.8813,
                        "sum_abs_corr_mean": 2.5985, "passed": 38, "passed_ratio": 0.019}])
    row = aggregate_row("svm", 4000, 635.123, st, quality={"eyes": 0.9102, "mouth": 0.9281, "pose": 0.9641})
    assert row["k"] == 800 and row["time"] == 635.12 and row["eyes_mean_corr"] == 0.8726
    assert row["sum_mean_corr"] == 0.8726 + 0.8443 + 0.8813           # unrounded float sum
    path = tmp_path / aggregate_file_name("svm", "w")
    append_aggregate(path, "svm", row)
    append_aggregate(path, "svm", aggregate_row("svm", 8000, 1.0, st, quality=None))
    lines = path.read_text().splitlines()
    assert lines[0] == (",n,k,time,svm_eyes_acc,svm_mouth_acc,svm_pose_acc,eyes_mean_corr,mouth_mean_corr,"
                        "pose_mean_corr,sum_mean_corr")
    assert lines[1].startswith("0,4000,800,635.12,0.9102,") and lines[2].startswith("1,8000,1600,1.0,-,-,-,")
    g = aggregate_row("gradient", 20000, 2475.0, st, quality={"eyes": 0.15, "mouth": 0.08, "pose": 0.05})
    assert list(g) == ["n", "time", "nn_eyes_mse", "nn_mouth_mse", "nn_pose_mse", "eyes_mean_corr",
                       "mouth_mean_corr", "pose_mean_corr", "sum_mean_corr"]
    m = aggregate_row("mixed", 160000, 1.0, st, quality={"eyes": 0.1343, "mouth": 0.9809, "pose": 0.9872})
    assert list(m)[:6] == ["n", "k", "time", "nn_eyes_mse", "svm_mouth_acc", "svm_pose_acc"] and m["k"] == 32000
    with pytest.raises(ValueError, match="columns"):
        append_aggregate(path, "gradient", g)
