"""Final generation: the exact z plus seeded noised copies with one fixed label, and the test of that choice."""
import json

import numpy as np
import pytest
import torch

from cnn.property_score_cnn import PropertyScoreCNN
from pipeline.io import read_png_rgb
from pipeline.checkpoint import save_checkpoint
from stylegan.generator import postprocess
from stylegan_modified import build_generator, save_state_dict, synthesize
from stages.final_generation import FINAL_LABEL, noised_latents, parse_label, run_final_generation
from stages.settings import TEST_DEFAULTS
from pipeline.latents import write_z_csv
from stages.bases import build_configs
from tests.single_thread import one_thread  # noqa: F401
from tests.stage5_world import make_root


def test_label_parsing_and_noised_latents():
    p7 = ("eyes", "hair_color", "hair_length", "mouth", "pose", "background_mean", "background_std")
    assert parse_label(None, p7).tolist() == pytest.approx([1.8, 0, 0, 1.6, -1.2, 0, 0])
    assert parse_label("eyes=-1.8,pose=2.4", p7).tolist() == pytest.approx([-1.8, 0, 0, 0, 2.4, 0, 0])
    assert parse_label(None, ("eyes", "mouth", "pose")).tolist() == pytest.approx([1.8, 1.6, -1.2])
    assert parse_label("1,2,3", ("eyes", "mouth", "pose")).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="unknown label name"):
        parse_label("nose=1", p7)
    z = np.arange(8, dtype=np.float32)
    a = noised_latents(z, 19, 0.3, 0)
    assert a.shape == (20, 8) and np.array_equal(a[0], z)
    assert np.array_equal(a, noised_latents(z, 19, 0.3, 0)) and not np.array_equal(a, noised_latents(z, 19, 0.3, 1))
    assert 0.2 < float(np.std(a[1:] - z)) < 0.4
    assert FINAL_LABEL["mouth"] == 1.6


def test_final_generation_renders_and_tests_the_choice(tmp_path):
    torch.set_num_threads(1)
    prof = make_root(tmp_path)
    gcfg, _ = build_configs(prof)
    g = build_generator(gcfg, "v3", seed=5)
    with torch.no_grad():
        g.mapping.dense0.weight.mul_(3)
    save_state_dict(g, tmp_path / "gen.pth")
    cnn_path = prof.data_root / "stage5" / "property_cnn" / "property_score_cnn.pth"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        save_checkpoint(PropertyScoreCNN(64, 0.125, 1, 8).state_dict(), cnn_path)
    zs = np.random.default_rng(0).standard_normal((3, 96)).astype(np.float32)
    write_z_csv(tmp_path / "z.csv", zs)
    out = tmp_path / "final"
    m = run_final_generation(prof, "v3", tmp_path / "gen.pth", tmp_path / "z.csv", 2, out, None, 19, 0.3, 0,
                             {**TEST_DEFAULTS, "batch_size": 50}, cnn_path, None)
    assert len(m["images"]) == 20 and m["z_index"] == 2 and m["label"]["eyes"] == pytest.approx(1.8)
    exact = postprocess(synthesize(g.eval(), zs[2:3], np.array([[1.8, 0, 0, 1.6, -1.2, 0, 0]], np.float32)))[0]
    diff = np.abs(read_png_rgb(out / "images" / "000000.png").astype(int) - exact.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01            # the exact z (float sums batched by 4 vs 1)
    assert not np.array_equal(read_png_rgb(out / "images" / "000001.png"), exact)
    row = m["test"][0]
    assert row["judge"] == "property_cnn" and set(row["exact_z"]) >= {"eyes_corr", "pose_mae", "passed"}
    assert 0 <= row["noised_passes"] <= 19
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["copies"] == 19 and (out / "report.md").is_file() and (out / "final_images.png").is_file()
    with pytest.raises(ValueError, match="out of range"):
        run_final_generation(prof, "v3", tmp_path / "gen.pth", tmp_path / "z.csv", 5, out, None, 1, 0.3, 0,
                             dict(TEST_DEFAULTS), cnn_path, None)
