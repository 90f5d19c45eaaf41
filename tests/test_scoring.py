"""stages.scoring (stage 4 end to end on a small synthface layout: CSV formats, normalisation, joins by img_no,
truth metrics, resume / byte-identical re-runs, and input errors that leave nothing written."""
import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline import lineage

from pipeline.io import atomic_write_png
from pipeline.profiles import Profile
from segmentation import property_scores as ps
import stages.scoring as stage4
from stages.scoring import ScoringInputError, ScoringRun, ScoringSettings, apply_normalisation, run_scoring

S = 224
N_IMAGES = 36
V2_HEADER = (",img_no,img_path,eyes_score,hair_color_score,hair_length_score,mouth_score,pose_score,"
             "background_mean_score,background_std_score,hairstyle_score")
V1_HEADER = V2_HEADER.rsplit(",", 1)[0]


def make_layout(root, n_images=N_IMAGES, seed=5):
    """Stage-1/2/3 outputs as the stage expects them (stage-3 stand-in: the true mask with parser-like errors)."""
    from synthface.renderer import colorize_mask, render_batch
    from synthface.world import WorldMap
    w = WorldMap(256, 0)
    z = w.sample_z(6 * n_images, seed=seed)
    t = w.truth(z)
    keep = np.flatnonzero(t["concept"].to_numpy() > 0.5)[:n_images]          # non-contiguous image numbers
    lat = pd.DataFrame(z, columns=[f"z_{i}" for i in range(z.shape[1])])
    lat.insert(0, "img_name", [f"{i:06d}.png" for i in range(len(z))])
    lat.insert(0, "img_no", np.arange(len(z)))
    (root / "stage1").mkdir(parents=True)
    lat.to_csv(root / "stage1" / "latents.csv", index=False)
    rgb, mask = render_batch(t.iloc[keep], 128)
    seg = root / "stage3" / "segmentation_results"
    rng = np.random.default_rng(seed)
    for i, n in enumerate(keep):
        atomic_write_png(root / "stage2" / "filtered" / f"{n:06d}.png", rgb[i])
        face = cv2.resize(rgb[i], (S, S), interpolation=cv2.INTER_CUBIC)
        true = cv2.resize(mask[i], (S, S), interpolation=cv2.INTER_NEAREST)
        # parser-like errors: a 1-px shift and a third of the class-boundary pixels taking the class
        # of their upper neighbour
        parsed = np.roll(true, int(rng.integers(-1, 2)), axis=1)
        above = np.roll(parsed, 1, axis=0)
        flip = (above != parsed) & (rng.random((S, S)) < 0.33)
        parsed[flip] = above[flip]
        atomic_write_png(seg / f"face_{n:06d}.png", face)
        atomic_write_png(seg / f"parsing_{n:06d}.png", parsed)
        atomic_write_png(seg / f"true_mask_{n:06d}.png", true)
        vis = cv2.addWeighted(face, 0.5, colorize_mask(parsed), 0.5, 0)
        atomic_write_png(seg / f"parsing_visualization_{n:06d}.png", vis)
    for stage in ("stage1", "stage2", "stage3"):     # finished upstream stages as far as stage 4 can tell
        lineage.seal(root / stage)
    return keep


def run_stage4(prof, settings=None, show_progress=False):
    """stages.scoring (stage 4 on the profile's folders, as stages.scoring.main does."""
    run = ScoringRun(prof.name, prof.data_root, prof.get("world_seed"))
    return run_scoring(run, settings or ScoringSettings(), prof.stage_dir("stage1"), prof.stage_dir("stage2"),
                       prof.stage_dir("stage3"), prof.stage_dir("stage4"), show_progress=show_progress)


def profile_for(root):
    return Profile({"name": "tiny4", "data_root": str(root), "resolution": 128, "world_seed": 0})


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("s4") / "runs"
    keep = make_layout(root)
    return root, keep


@pytest.fixture(scope="module")
def first_run(layout):
    root, keep = layout
    prof = profile_for(root)
    m = run_stage4(prof, ScoringSettings(batch_size=8), show_progress=False)
    return prof, m


def _copy_layout(root, tmp_path):
    dst = tmp_path / "runs"
    shutil.copytree(root, dst, ignore=shutil.ignore_patterns("stage4"))
    return dst


def _csv_bytes(out):
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.csv"))}


# ------------------------------------------------------------------------------------ formats

def test_csv_formats_and_normalisation(first_run, layout):
    prof, m = first_run
    root, keep = layout
    out = root / "stage4"
    text = (out / "all_scores_v2.csv").read_text()
    assert text.splitlines()[0] == V2_HEADER
    assert (out / "all_scores.csv").read_text().splitlines()[0] == V1_HEADER
    df = pd.read_csv(out / "all_scores_v2.csv", index_col=0)
    assert list(df.index) == list(range(len(keep)))
    assert df["img_no"].tolist() == sorted(keep.tolist())                       # sorted by img_no
    assert df["img_path"].iloc[0] == f"stage2/filtered/{int(sorted(keep)[0]):06d}.png"
    for c in df.columns[2:]:
        assert abs(df[c].mean()) < 1e-3 and abs(df[c].std(ddof=1) - 1) < 2e-3, c
        assert all(len(s.split(".")[1]) <= 4 for s in df[c].astype(str) if "." in s), c
    raw = pd.read_csv(out / "all_scores_v2_raw.csv", keep_default_na=False)
    assert list(raw.columns) == ["img_no", *ps.V2_COLUMNS, "score_flags"]
    st = json.loads((out / "all_scores_v2_norm_stats.json").read_text())
    assert st["ddof"] == 1 and st["count"] == len(keep)
    for c in ps.V2_COLUMNS:
        col = raw[c].astype(float)
        assert st["columns"][f"{c}_score"]["mean"] == pytest.approx(col.mean(), rel=1e-12)
        assert st["columns"][f"{c}_score"]["std"] == pytest.approx(col.std(ddof=1), rel=1e-12)
    again = apply_normalisation(raw, st["columns"])
    for c in again.columns:
        np.testing.assert_array_equal(again[c].to_numpy(), df[c].to_numpy())
    assert (out / "true_mask_scores_v2_raw.csv").is_file() and (out / "true_mask_scores_raw.csv").is_file()


def test_rows_are_joined_by_img_no(first_run, layout):
    prof, m = first_run
    root, keep = layout
    n = int(sorted(keep)[7])
    seg = root / "stage3" / "segmentation_results"
    mp = cv2.imread(str(seg / f"parsing_{n:06d}.png"), cv2.IMREAD_UNCHANGED)
    face = cv2.cvtColor(cv2.imread(str(seg / f"face_{n:06d}.png")), cv2.COLOR_BGR2RGB)
    sb = ps.scores_v2(mp[None], face[None])
    raw = pd.read_csv(root / "stage4" / "all_scores_v2_raw.csv", keep_default_na=False).set_index("img_no")
    for c in ps.V2_COLUMNS:
        assert raw.loc[n, c] == sb.values[c][0], c


def test_metrics_truth_fallbacks_and_report(first_run, layout):
    prof, m = first_run
    root, keep = layout
    assert m["counts"] == {"images": len(keep), "computed_this_run": len(keep), "from_cache": 0}
    assert m["map_size"] == 224 and m["geometry"]["hair_row_threshold"] == 20
    assert m["throughput"]["compute_images_per_s"] > 0
    t = m["truth"]
    for src in ("parsed", "true_mask"):
        for c in ps.V2_COLUMNS:
            assert t[src]["v2"][c]["pearson"] is not None
    # the exact masks score the truth well even on 36 faces; parsed maps with 1-px shifts and noise a bit less
    for c in ("pose", "hair_color", "background_mean"):
        assert t["true_mask"]["v2"][c]["pearson"] > 0.9, c
    assert t["true_mask"]["v2"]["hairstyle"]["auc"] > 0.8
    assert t["true_mask"]["v2"]["hairstyle"]["auc_threshold"] == 0.5
    assert set(m["fallbacks"]) == {"parsed_v2", "parsed_v1", "true_mask_v2", "true_mask_v1"}
    raw = pd.read_csv(root / "stage4" / "all_scores_v2_raw.csv", keep_default_na=False)
    closed = int(raw["score_flags"].str.contains("mouth_closed").sum())
    assert m["fallbacks"]["parsed_v2"].get("mouth_closed", 0) == closed
    assert m["mouth_zero_share"] == pytest.approx((raw["mouth"] == 0).mean())
    assert set(m["correlation_v2"]) == {f"{c}_score" for c in ps.V2_COLUMNS}
    rep = (root / "stage4" / "report.md").read_text()
    for fig in ("score_histograms.png", "score_correlation.png", "examples.png", "truth_scatter.png"):
        assert f"report/{fig}" in rep and (root / "stage4" / "report" / fig).is_file()
    assert "Fallbacks and conditions" in rep and "Against the truth" in rep


# ------------------------------------------------------------------------------------ resume

def test_rerun_uses_the_cache_and_writes_byte_identical_csvs(first_run, layout):
    prof, m = first_run
    root, keep = layout
    before = _csv_bytes(root / "stage4")
    m2 = run_stage4(prof, ScoringSettings(batch_size=8), show_progress=False)
    assert m2["counts"]["computed_this_run"] == 0 and m2["counts"]["from_cache"] == len(keep)
    assert _csv_bytes(root / "stage4") == before


def test_interrupted_run_resumes_to_the_same_bytes(first_run, layout, tmp_path, monkeypatch):
    prof0, _ = first_run
    root0, keep = layout
    reference = _csv_bytes(root0 / "stage4")
    root = _copy_layout(root0, tmp_path)
    prof = profile_for(root)
    real = stage4.score_batch
    calls = {"n": 0}

    def dying(arrays, settings):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt("simulated kill")
        return real(arrays, settings)

    monkeypatch.setattr(stage4, "score_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        run_stage4(prof, ScoringSettings(batch_size=8), show_progress=False)
    assert not (root / "stage4" / "all_scores_v2.csv").exists()
    monkeypatch.setattr(stage4, "score_batch", real)
    # a different batch size on resume: results do not depend on it
    m = run_stage4(prof, ScoringSettings(batch_size=5), show_progress=False)
    assert m["counts"]["from_cache"] == 16 and m["counts"]["computed_this_run"] == len(keep) - 16
    assert _csv_bytes(root / "stage4") == reference


def test_a_changed_input_is_recomputed(layout, tmp_path):
    root0, keep = layout
    root = _copy_layout(root0, tmp_path)
    prof = profile_for(root)
    run_stage4(prof, ScoringSettings(algorithms=("v2",), batch_size=16, examples=0), show_progress=False)
    n = int(sorted(keep)[3])
    p = root / "stage3" / "segmentation_results" / f"parsing_{n:06d}.png"
    mp = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    mp[100:120, 20:60] = 8                                   # a big open mouth
    atomic_write_png(p, mp)
    lineage.seal(root / "stage3")                            # as a new stage-3 run would
    m = run_stage4(prof, ScoringSettings(algorithms=("v2",), batch_size=16, examples=0), show_progress=False)
    assert m["counts"]["computed_this_run"] == 1
    raw = pd.read_csv(root / "stage4" / "all_scores_v2_raw.csv", keep_default_na=False).set_index("img_no")
    assert raw.loc[n, "mouth"] > 0.5
    assert not (root / "stage4" / "all_scores.csv").exists()      # v1 not requested


def test_settings_change_uses_its_own_cache(first_run, layout, tmp_path):
    root0, keep = layout
    root = _copy_layout(root0, tmp_path)
    prof = profile_for(root)
    a = run_stage4(prof, ScoringSettings(batch_size=16, examples=0), show_progress=False)
    b = run_stage4(prof, ScoringSettings(batch_size=16, examples=0, hairstyle_left_check="block"),
                   show_progress=False)
    assert a["cache"] != b["cache"] and b["counts"]["computed_this_run"] == len(keep)
    c = run_stage4(prof, ScoringSettings(batch_size=16, examples=0, v1_image="original", eye_components="largest"),
                   show_progress=False)
    assert c["counts"]["computed_this_run"] == len(keep) and c["settings"]["v1_image"] == "original"
    assert c["settings"]["eye_components"] == "largest"


# ------------------------------------------------------------------------------------ input errors

@pytest.mark.parametrize("damage", ["missing_face", "garbage_parsing", "truncated_parsing", "flipped_byte",
                                    "rgb_parsing", "wrong_size_face", "missing_true_mask"])
def test_a_bad_input_names_the_file_and_writes_nothing(layout, tmp_path, damage):
    root0, keep = layout
    root = _copy_layout(root0, tmp_path)
    seg = root / "stage3" / "segmentation_results"
    n = int(sorted(keep)[-2])
    kind, name = {"missing_face": ("face", "face"), "garbage_parsing": ("parsing", "parsing"),
                  "truncated_parsing": ("parsing", "parsing"), "flipped_byte": ("parsing", "parsing"),
                  "rgb_parsing": ("parsing", "parsing"), "wrong_size_face": ("face", "face"),
                  "missing_true_mask": ("true_mask", "true_mask")}[damage]
    p = seg / f"{name}_{n:06d}.png"
    data = p.read_bytes()
    if damage.startswith("missing"):
        p.unlink()
    elif damage == "garbage_parsing":
        p.write_bytes(b"not a png at all")
    elif damage == "truncated_parsing":
        p.write_bytes(data[: len(data) // 2])
    elif damage == "flipped_byte":
        b = bytearray(data)
        b[60] ^= 0xFF
        p.write_bytes(bytes(b))
    elif damage == "rgb_parsing":
        atomic_write_png(p, np.zeros((S, S, 3), np.uint8))
    elif damage == "wrong_size_face":
        atomic_write_png(p, np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(ScoringInputError) as exc:
        run_stage4(profile_for(root), ScoringSettings(batch_size=8), show_progress=False)
    assert str(p) in str(exc.value) and kind in str(exc.value)
    assert not (root / "stage4").exists()


def test_class_ids_out_of_range_are_an_error_and_no_csv_is_written(layout, tmp_path):
    root0, keep = layout
    root = _copy_layout(root0, tmp_path)
    n = int(sorted(keep)[0])
    p = root / "stage3" / "segmentation_results" / f"parsing_{n:06d}.png"
    mp = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    mp[5, 7] = 13
    atomic_write_png(p, mp)
    lineage.seal(root / "stage3")                            # a stage 3 that wrote a bad map and finished
    with pytest.raises(ScoringInputError, match=r"class id 13 at row 5, column 7"):
        run_stage4(profile_for(root), ScoringSettings(batch_size=8), show_progress=False)
    assert not list((root / "stage4").glob("*.csv")) and not (root / "stage4" / "metrics.json").exists()


def test_missing_stage_folders_and_bad_settings(tmp_path):
    prof = profile_for(tmp_path / "runs")
    with pytest.raises(ScoringInputError, match="run_cnn.py"):
        run_stage4(prof, show_progress=False)
    (tmp_path / "runs" / "stage2" / "filtered").mkdir(parents=True)
    atomic_write_png(tmp_path / "runs" / "stage2" / "filtered" / "000003.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ScoringInputError, match="run_segmentation.py"):
        run_stage4(prof, show_progress=False)
    for bad in (dict(algorithms=("v1",)), dict(v1_image="x"), dict(hairstyle_left_check="y"), dict(batch_size=0),
                dict(eye_components="z")):
        with pytest.raises(ValueError):
            ScoringSettings(**bad).validate()


def test_normalise_degenerate_column():
    raw = pd.DataFrame({"eyes": [3.0, 3.0, 3.0], "mouth": [0.0, 0.5, 1.0]})
    sc, st = stage4.normalise(raw, ["eyes", "mouth"])
    assert sc["eyes_score"].tolist() == [0.0, 0.0, 0.0] and st["eyes_score"]["std"] is None
    assert sc["mouth_score"].tolist() == [-1.0, 0.0, 1.0]


def test_script_flags_reach_the_stage(layout, tmp_path, capsys):
    import compute_property_scores_v2 as script
    root0, keep = layout
    root = _copy_layout(root0, tmp_path)
    out = tmp_path / "elsewhere"
    script.main(["--profile", "synthface", "--stage1", str(root / "stage1"), "--stage2", str(root / "stage2"),
                 "--stage3", str(root / "stage3"), "--out", str(out), "--algorithms", "v2", "--batch-size", "9",
                 "--examples", "0", "--no-progress"])
    printed = capsys.readouterr().out
    assert f"stage 4: {len(keep)} images" in printed and "vs truth (true_mask)" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert m["settings"]["batch_size"] == 9 and m["settings"]["algorithms"] == ["v2"]
    assert (out / "all_scores_v2.csv").is_file() and not (out / "all_scores.csv").exists()


def test_a_profile_without_a_world_needs_no_truth_or_true_masks(layout, tmp_path):
    root0, keep = layout
    root = _copy_layout(root0, tmp_path)
    for p in (root / "stage3" / "segmentation_results").glob("true_mask_*.png"):
        p.unlink()
    lineage.seal(root / "stage3")                            # a stage 3 without a world writes no true masks
    prof = Profile({"name": "real", "data_root": str(root), "resolution": 128})
    m = run_stage4(prof, ScoringSettings(batch_size=16, examples=2), show_progress=False)
    assert "truth" not in m and set(m["fallbacks"]) == {"parsed_v2", "parsed_v1"}
    assert not (root / "stage4" / "true_mask_scores_v2_raw.csv").exists()
    rep = (root / "stage4" / "report.md").read_text()
    assert "Against the truth" not in rep and "report/examples.png" in rep
