"""Stage 5b: FineTune-v1 / v4 loop and stage (options that restore the original, resume, re-run, v4 flag)."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from cnn.property_score_cnn import P3, P7
from stylegan_modified import build_discriminator, build_generator, load_generator
from stylegan_modified.distributed import DistContext
from training.gan import LOG_COLUMNS, DiscriminatorLoss, GanSettings, GanTrainer
from stages.settings import TEST_DEFAULTS
from stages.bases import build_configs
from stages.settings import profile_section as stage5_settings
from stages.finetune_gan import run_gan_stage
from tests.single_thread import one_thread  # noqa: F401
from tests.stage5_world import interrupted_then_resumed, world_with_property_cnn


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return world_with_property_cnn(tmp_path_factory, "s5gan")


def gan_settings(prof, version="v1", **kw) -> GanSettings:
    defaults = {f.name: f.default for f in dataclasses.fields(GanSettings)}
    cfg = stage5_settings(prof, version, defaults)
    return GanSettings(**{**cfg, "version": version, **kw})


def gtest_cfg(prof) -> dict:
    return stage5_settings(prof, "generation_test", dict(TEST_DEFAULTS))


def small_models(prof, version="v1"):
    gcfg, dcfg = build_configs(prof)
    return build_generator(gcfg, version, seed=1), build_discriminator(dcfg, version, seed=1, mbstd_group_size=4)


def labels(n=20, dim=7, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_v1_stage_files_log_columns_and_finished_rerun(world):
    out = world.data_root / "stage5" / "v1"
    m = run_gan_stage(world, gan_settings(world), gtest_cfg(world), female_n=10, show_progress=False)
    log = pd.read_csv(out / "train_log.csv", index_col=0)
    assert list(log.columns) == LOG_COLUMNS and len(log) == 3 and log["idx"].tolist() == [0, 1, 2]
    assert set(log["g_train_count"]) <= {1, 2, 3, 4}
    for f in ("grids/epoch_0000.png", "checkpoints/epoch_0000_gen.pth", "checkpoints/epoch_0000_dis.pth",
              "report.md", "report/training_curves.png", "generation_test/metrics.json"):
        assert (out / f).is_file(), f
    g = load_generator(out / "generator.pth", build_configs(world)[0], "v1")     # strict
    assert g.spec.label_names == P7
    assert m["trained_this_run"] and m["steps"] == 3 and m["generation_test"]["n_z"] == 2
    assert m["generation_test"]["primary_judge"] == "property_cnn"
    assert m["female_share"]["n"] == 10 and 0 <= m["female_share"]["gender_cnn"]["share"] <= 1
    assert any("evaluator" in n for n in m["notes"])                 # no evaluator in this world: said so
    before = (out / "generator.pth").read_bytes()
    again = run_gan_stage(world, gan_settings(world), gtest_cfg(world), female_n=10, show_progress=False)
    assert again["trained_this_run"] is False and (out / "generator.pth").read_bytes() == before
    assert again["generation_test"]["judges"] == m["generation_test"]["judges"]
    with pytest.raises(ValueError, match="fake_labels"):
        run_gan_stage(world, gan_settings(world, fake_labels="real"), gtest_cfg(world), show_progress=False)


def test_v4_flag_runs_the_same_loop_with_three_labels_from_v1(world):
    if not (world.data_root / "stage5" / "v1" / "generator.pth").is_file():
        run_gan_stage(world, gan_settings(world), gtest_cfg(world), female_n=10, show_progress=False)
    m = run_gan_stage(world, gan_settings(world, "v4"), gtest_cfg(world), female_n=10, show_progress=False)
    assert m["label_names"] == list(P3) and m["label_file"].endswith("all_scores_v2_cnn.csv")
    assert m["init"]["generator_source"].endswith("v1/generator.pth")
    assert "rows [0, 3, 4]" in m["init"]["mapping.label_weight"]
    g = load_generator(world.data_root / "stage5" / "v4" / "generator.pth", build_configs(world)[0], "v4")
    assert g.mapping.label_weight.shape[0] == 3


def test_interrupted_run_resumes_to_the_uninterrupted_result(world, tmp_path, monkeypatch):
    s = gan_settings(world, max_steps_per_epoch=4, checkpoint_every=2)
    cfg = {**gtest_cfg(world), "n_z": 1}
    interrupted_then_resumed(monkeypatch, GanTrainer, lambda out: run_gan_stage(
        world, s, cfg, out_dir=out, female_n=4, show_progress=False), tmp_path / "a", tmp_path / "b",
        ("generator.pth", "discriminator.pth"))
    la, lb = pd.read_csv(tmp_path / "a" / "train_log.csv"), pd.read_csv(tmp_path / "b" / "train_log.csv")
    assert len(la) == 4 and np.allclose(la["d_loss"], lb["d_loss"], atol=1e-4)


def test_fake_label_modes(world):
    g, d = small_models(world)
    lab = labels()
    y = torch.from_numpy(lab[:8])
    gen = torch.Generator().manual_seed(0)
    real = GanTrainer(g, d, lab, gan_settings(world, fake_labels="real"), DistContext())._fake_labels(gen, 8, y)
    assert real is y                                                      # the original: the real batch's labels
    t = GanTrainer(g, d, lab, gan_settings(world), DistContext())
    drawn = t._fake_labels(torch.Generator().manual_seed(0), 8, y)
    assert drawn.dtype == torch.float32 and not torch.equal(drawn, y)
    assert all(any(torch.equal(r, torch.from_numpy(q)) for q in lab) for r in drawn)   # rows of the label table
    assert torch.equal(drawn, t._fake_labels(torch.Generator().manual_seed(0), 8, y))  # seeded
    normal = GanTrainer(g, d, lab, gan_settings(world, fake_labels="normal"), DistContext())
    assert not any(torch.equal(normal._fake_labels(torch.Generator().manual_seed(0), 8, y)[0], torch.from_numpy(q))
                   for q in lab)


def _one_step(world, seed=0, **kw):
    g, d = small_models(world)
    with torch.no_grad():                  # noise strengths start at 0 (GenForce): give the noise an effect
        for name, p in g.named_parameters():
            if name.endswith("apply_noise.weight"):
                p.fill_(0.5)
    lab = labels()
    t = GanTrainer(g, d, lab, gan_settings(world, **kw), DistContext())
    x = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    row = t.train_step(x, torch.from_numpy(lab[:8]).double(), 0, 0)      # float64 labels are cast
    return row, g


def test_quirk_options_change_the_step_and_stay_seeded(world):
    base, g0 = _one_step(world)
    again, g1 = _one_step(world)
    assert base == again and all(torch.equal(a, b) for a, b in zip(g0.state_dict().values(), g1.state_dict().values()))
    for kw in ({"fake_labels": "real"}, {"style_mixing_prob": 0.9}, {"randomize_noise": True}, {"r1_gamma": 0.0}):
        other, _ = _one_step(world, **kw)
        assert other["d_loss"] != base["d_loss"] or other["g_loss"] != base["g_loss"], kw
        assert other == _one_step(world, **kw)[0], kw                     # seeded
    assert _one_step(world, g_ratio=1e9)[0]["g_train_count"] == 1        # L_G < ratio * L_D at once
    assert _one_step(world, g_ratio=0.0)[0]["g_train_count"] == 4        # never: the cap of 4 updates


def test_r1_penalty_is_the_batch_mean_squared_gradient_norm(world):
    _, d = small_models(world)
    x, y = torch.rand(4, 3, 64, 64) * 2 - 1, torch.randn(4, 7)
    loss, rs, fs, r1 = DiscriminatorLoss(d, 10.0)(x, y, x.flip(0), y)
    xr = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(d(xr, y).sum(), xr)
    assert torch.allclose(r1, grad.pow(2).sum(dim=(1, 2, 3)).mean(), rtol=1e-4)
    plain = torch.nn.functional.softplus(fs).mean() + torch.nn.functional.softplus(-rs).mean()
    assert torch.allclose(loss.detach(), plain + 5.0 * r1, rtol=1e-5)


def test_the_script_path_resolves_writes_run_config_and_runs_the_stage(world, tmp_path, capsys):
    """run_stylegan_fine_tuning_v1.py -> stages.finetune_gan.main: the profile's stage5.v1 preset over the
    constants, a flag over both, run_config.json with sources, then the same stage as run_gan_stage."""
    import json

    import run_stylegan_fine_tuning_v1 as script
    from pipeline.config import constants
    from stages import finetune_gan
    out = tmp_path / "v1_script"
    m = finetune_gan.main(world, constants(vars(script)), {"progress": False, "seed": 3, "test_n_z": 2},
                          {"out": out})
    cfg = json.loads((out / "run_config.json").read_text())
    assert cfg["settings"]["epochs"] == 1 and cfg["sources"]["epochs"] == "profile s5tiny:stage5.v1"
    assert cfg["settings"]["seed"] == 3 and cfg["sources"]["seed"] == "flag --seed"
    assert cfg["generation_test"]["settings"]["n_z"] == 2
    assert m["settings"]["seed"] == 3 and m["settings"]["max_steps_per_epoch"] == 3 and m["steps"] == 3
    printed = capsys.readouterr().out
    assert "seed = 3 (constant 0; from flag --seed)" in printed and "FineTune-v1: 3 steps" in printed
