"""Stage 5a: the property-score CNN stage (training on stage-4 scores, relabelling, metrics, resume)."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from cnn.property_score_cnn import P7, PropertyCNNSettings
from pipeline.vocabulary import SCORE_COLUMNS
from training.property_cnn import train_property_cnn
from evaluation.networks import load_property_cnn_for
from pipeline.io import InputError
from pipeline.kept_set import KeptSetError as Stage5InputError
from pipeline.kept_set import kept_latents, load_kept_set, read_score_csv
from stages.property_cnn import property_cnn_config, relabel, run_property_stage
from tests.single_thread import one_thread  # noqa: F401
from tests.stage5_world import make_root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    prof = make_root(tmp_path_factory.mktemp("s5prop"))
    m = run_property_stage(prof, show_progress=False)
    return prof, m


def test_stage_writes_the_spec_files_and_held_out_metrics(world):
    prof, m = world
    out = prof.data_root / "stage5" / "property_cnn"
    df = pd.read_csv(out / "all_scores_v2_cnn.csv")
    assert list(df.columns) == ["img_no", "img_path", *SCORE_COLUMNS]        # no index column
    assert df["img_no"].is_monotonic_increasing and len(df) == m["images"] == 40
    assert df["img_path"].iloc[0] == f"stage2/filtered/{df['img_no'].iloc[0]:06d}.png"
    vals = df[list(SCORE_COLUMNS)].to_numpy()
    assert np.allclose(vals, np.round(vals, 4))
    cmp = pd.read_csv(out / "compare" / "all_scores_v2_vs_cnn.csv")
    assert list(cmp.columns[:2]) == ["img_no", "img_path"] and len(cmp.columns) == 2 + 3 * 7
    assert np.allclose(cmp["eyes_diff"], np.round(np.abs(cmp["eyes_v2"] - cmp["eyes_v2_cnn"]), 4))
    assert m["split"] == {"train": 30, "valid": 10, "seed": 0, "split_seed": m["split"]["split_seed"]}
    for key in ("held_out_vs_stage4", "all_vs_stage4"):
        assert set(m[key]) == set(P7) and all(set(v) == {"r", "mae", "rmse"} for v in m[key].values())
    assert set(m["held_out_vs_truth"]) == set(P7)        # world-backed: against truth(z) too
    # the stage-4 targets themselves are standardised truth here: their r vs truth is 1 (up to rounding)
    assert all(v > 0.999 for v in m["held_out_stage4_vs_truth"].values() if v is not None)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["epochs"] == 2 and saved["trained_this_run"] is True
    assert (out / "report.md").is_file() and (out / "report" / "learning_curves.png").is_file()
    assert not (out / "train_state.pth").exists()                         # removed once finished


def test_rerun_does_not_retrain_and_other_settings_are_refused(world):
    prof, m = world
    out = prof.data_root / "stage5" / "property_cnn"
    before = (out / "property_score_cnn.pth").read_bytes()
    again = run_property_stage(prof, show_progress=False)
    assert again["trained_this_run"] is False
    assert (out / "property_score_cnn.pth").read_bytes() == before
    assert again["held_out_vs_stage4"] == m["held_out_vs_stage4"]
    cfg = property_cnn_config(prof)
    cfg["lr"] = 1e-2
    with pytest.raises(ValueError, match="lr"):
        run_property_stage(prof, cfg, show_progress=False)


def test_relabel_train_mode_is_the_original_dropout_quirk(world):
    prof, _ = world
    cnn = load_property_cnn_for(prof, prof.data_root / "stage5" / "property_cnn" / "property_score_cnn.pth")
    kept = load_kept_set(prof.stage_dir("stage2"), prof.data_root / "stage4" / "all_scores_v2.csv", P7, int(prof["resolution"]))
    a = relabel(cnn, kept.images[:8], "eval", 4, 0)
    b = relabel(cnn, kept.images[:8], "train", 4, 0)
    # eval: seed-free, and batch-free up to float rounding (the conv kernels sum in a batch-dependent order)
    np.testing.assert_allclose(relabel(cnn, kept.images[:8], "eval", 8, 1), a, rtol=0, atol=1e-6)
    assert np.array_equal(a, relabel(cnn, kept.images[:8], "eval", 4, 1))
    assert not np.allclose(a, b) and np.array_equal(b, relabel(cnn, kept.images[:8], "train", 4, 0))
    assert not cnn.training


def test_score_csv_errors_name_file_row_and_column(tmp_path):
    p = tmp_path / "s.csv"
    cols = {f"{q}_score": [0.1, 0.2] for q in P7}
    pd.DataFrame({"img_no": [3, 5], **cols}).to_csv(p, index=True)
    nos, lab = read_score_csv(p, P7, np.array([5, 3]))
    assert nos.tolist() == [5, 3] and lab.dtype == np.float32
    with pytest.raises(Stage5InputError, match="no row for image 000007"):
        read_score_csv(p, P7, np.array([3, 7]))
    bad = pd.DataFrame({"img_no": [3, 5], **cols}).astype({"pose_score": object})
    bad.loc[1, "pose_score"] = "x"
    bad.to_csv(p, index=False)
    with pytest.raises(Stage5InputError, match=r"row 2, column 'pose_score'"):
        read_score_csv(p, P7)
    pd.DataFrame({"img_no": [3, 3], **cols}).to_csv(p, index=False)
    with pytest.raises(Stage5InputError, match="row 2, column 'img_no': image 3 appears twice"):
        read_score_csv(p, P7)
    pd.DataFrame({"img_no": [3]}).to_csv(p, index=False)
    with pytest.raises(Stage5InputError, match="missing column"):
        read_score_csv(p, P7)


def test_interrupted_training_resumes_to_the_uninterrupted_result(tmp_path):
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (24, 3, 64, 64), generator=g, dtype=torch.uint8)
    targets = imgs.float().mean(dim=(1, 2, 3), keepdim=False)[:, None].repeat(1, 7).numpy() / 128 - 1
    s = PropertyCNNSettings(resolution=64, width=0.125, padding=1, head_units=8, lr=1e-3, batch_size=8,
                            valid_batch_size=8, max_epochs=3, patience=5, valid_fraction=0.25)
    full = train_property_cnn(imgs, targets, s, progress=False)

    class Stop(Exception):
        pass

    def stop_at_epoch_1(msg):
        if msg.startswith("property CNN epoch 1"):
            raise Stop

    state = tmp_path / "state.pth"
    with pytest.raises(Stop):
        train_property_cnn(imgs, targets, s, progress=stop_at_epoch_1, state_path=state)
    assert state.is_file()
    resumed = train_property_cnn(imgs, targets, s, progress=False, state_path=state)
    assert [round(h["valid_loss"], 6) for h in resumed.history] == [round(h["valid_loss"], 6) for h in full.history]
    for k, v in full.model.state_dict().items():
        assert torch.allclose(v, resumed.model.state_dict()[k], atol=1e-6)
    assert not state.exists()


def test_kept_latents_join_by_image_number(world):
    prof, _ = world
    lat = pd.read_csv(prof.data_root / "stage1" / "latents.csv")
    z = kept_latents(prof.stage_dir("stage1") / "latents.csv", np.array([5, 2]), int(prof["generator"]["z_dim"]))
    assert z.dtype == np.float32 and np.array_equal(z[0], lat.loc[lat["img_no"] == 5].iloc[0, 2:].to_numpy(np.float32))
    with pytest.raises(InputError, match="no row for image 999999"):
        kept_latents(prof.stage_dir("stage1") / "latents.csv", np.array([999999]), int(prof["generator"]["z_dim"]))


def test_a_missing_row_message_counts_the_others_only_when_there_are_others(tmp_path):
    p = tmp_path / "s.csv"
    cols = ",".join(f"{q}_score" for q in P7)
    p.write_text("img_no," + cols + "\n" + "1," + ",".join(["0.5"] * 7) + "\n")
    with pytest.raises(Stage5InputError) as one:
        read_score_csv(p, P7, np.array([1, 2]))
    assert "no row for image 000002;" in str(one.value) and "more" not in str(one.value)
    with pytest.raises(Stage5InputError, match=r"no row for image 000002 \(and 2 more kept images\)"):
        read_score_csv(p, P7, np.array([1, 2, 3, 4]))
