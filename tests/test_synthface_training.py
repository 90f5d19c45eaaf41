"""synthface default-model plumbing: emulated hand labels, generator training (quick mode), evaluator."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.profiles import Profile
from synthface.generator_training import (RenderSource, TrainSettings, texture_regions, texture_stats,
                                          train_default_generator)
from synthface.hand_labels import AG_FILE, QG_FILE, emulate_hand_labels, write_hand_labels
from synthface.renderer import render_batch
from synthface.world import WorldMap


@pytest.fixture(scope="module")
def world():
    return WorldMap(z_dim=128, seed=0)


def test_hand_labels_follow_truth_with_the_configured_noise(world, tmp_path):
    z = world.sample_z(4000, seed=5)
    truth = world.truth(z)
    df, stats = emulate_hand_labels(truth, np.arange(4000), noise_rate=0.01, seed=0)
    clean_gender = truth["female"].to_numpy().astype(int)
    flipped = (df["gender"].to_numpy() != clean_gender).mean()
    assert 0.005 < flipped < 0.016 and stats["flipped"]["gender"] == int(flipped * 4000)
    assert ((1 - df["quality"]) != truth["quality_defect"].astype(int)).mean() < 0.02
    assert set(df["gender"]) <= {0, 1} and df["img_name"].tolist()[:3] == [0, 1, 2]
    df2, _ = emulate_hand_labels(truth, np.arange(4000), noise_rate=0.01, seed=0)
    assert df.equals(df2)
    none, st = emulate_hand_labels(truth, np.arange(4000), noise_rate=0.0, seed=0)
    assert sum(st["flipped"].values()) == 0
    with pytest.raises(ValueError):
        emulate_hand_labels(truth, np.arange(4000), noise_rate=0.6, seed=0)
    latents = pd.concat([pd.DataFrame({"img_no": np.arange(300)}),
                         pd.DataFrame(z[:300], columns=[f"z_{i}" for i in range(128)])], axis=1)
    write_hand_labels(tmp_path, latents, 0, 200, 0.01, 0)
    qg = pd.read_csv(tmp_path / QG_FILE)
    assert list(qg.columns) == ["img_name", "quality", "gender"] and len(qg) == 200
    assert list(pd.read_csv(tmp_path / AG_FILE).columns) == ["img_name", "age", "glass"]


def _tiny_profile():
    return Profile({"name": "t", "resolution": 64,
                    "generator": {"resolution": 64, "z_dim": 128, "w_dim": 32, "mapping_layers": 2,
                                  "mapping_fmaps": 32, "fmaps_base": 256, "fmaps_max": 32},
                    "discriminator": {"resolution": 64, "fmaps_base": 256, "fmaps_max": 32}})


def test_generator_training_learns_and_resumes_exactly(world, tmp_path):
    prof = _tiny_profile()
    src = RenderSource(world, lambda t: render_batch(t, resolution=64), 128)
    s = TrainSettings(mapping_warmup_steps=3, warmup_batch_size=8, steps=6, d_steps=2, batch_size=4, ckpt_every=2,
                      log_every=1, threads=1, r1_gamma=1.0)
    whole = train_default_generator(prof, src, tmp_path / "whole", s, show_progress=False)
    assert len([r for r in whole["log"] if "warmup_aux" in r]) == 3
    g_log = [r for r in whole["log"] if "l1" in r]
    assert len(g_log) == 6 and len([r for r in whole["log"] if "d_loss" in r]) == 2
    assert g_log[0]["aux_weight"] == s.aux_weight and g_log[-1]["aux_weight"] == pytest.approx(s.aux_final_weight)
    assert all("tex" in r for r in g_log)
    # interrupted after 4 steps (checkpoint), then resumed: identical weights
    train_default_generator(prof, src, tmp_path / "resumed", s, show_progress=False, stop_after=2)  # in warm-up
    train_default_generator(prof, src, tmp_path / "resumed", s, show_progress=False, stop_after=6)  # in regression
    resumed = train_default_generator(prof, src, tmp_path / "resumed", s, show_progress=False)
    for (k, a), b in zip(whole["generator"].state_dict().items(), resumed["generator"].state_dict().values()):
        assert torch.equal(a, b), k
    for (k, a), b in zip(whole["discriminator"].state_dict().items(), resumed["discriminator"].state_dict().values()):
        assert torch.equal(a, b), k
    assert json.loads((tmp_path / "resumed" / "train_log.json").read_text())[-1]["step"] == 10


def test_evaluator_learns_rendered_attributes_quickly(world):
    from synthface.evaluator import fidelity_scores, train_evaluator

    def sample(step, bs):
        z = np.random.default_rng([9, step]).standard_normal((bs, 128), dtype=np.float32)
        t = world.truth(z)
        rgb, _ = render_batch(t, resolution=64)
        return rgb, {n: t[n].to_numpy() for n in ("bg_mean", "female")}

    ev, log = train_evaluator(sample, ["bg_mean"], ["female"], steps=60, batch_size=32, show_progress=False)
    imgs, lab = sample(10_000, 256)
    with torch.no_grad():
        pred = ev.predict(imgs)
    scores = fidelity_scores(pred, lab, ["bg_mean"], ["female"])
    assert scores["bg_mean"]["pearson_r"] > 0.8          # background brightness is easy: learnt in 60 steps
    assert not ev.net.training
    ev2 = type(ev).from_state(ev.state())
    assert np.allclose(ev2.predict(imgs[:8])["bg_mean"], pred["bg_mean"][:8], atol=1e-5)


def test_texture_stats_measure_amount_not_phase():
    rng = np.random.default_rng(0)
    flat = torch.zeros(2, 3, 64, 64)
    noise_a = torch.from_numpy(rng.standard_normal((2, 1, 64, 64)).astype(np.float32)).expand(2, 3, 64, 64)
    noise_b = torch.from_numpy(rng.standard_normal((2, 1, 64, 64)).astype(np.float32)).expand(2, 3, 64, 64)
    mask = np.zeros((2, 64, 64), np.uint8)
    mask[:, 40:, :] = 10                                  # hair in the bottom rows
    mask[:, 32:40, :] = 1                                 # skin above it
    regions = texture_regions(mask)
    assert regions.shape == (2, 4, 64, 64)
    assert regions[0, 0].sum() == 29 * 64                 # upper background rows [0, 32), eroded by 3 px at 64
    assert regions[0, 3].sum() == 16 * 64                 # top strip: rows [0, 16)
    s_a, s_b = texture_stats(0.1 * noise_a, regions), texture_stats(0.1 * noise_b, regions)
    s_0, s_2 = texture_stats(flat, regions), texture_stats(0.2 * noise_a, regions)
    # two textures of the same spectrum and amplitude score alike; amplitude doubles the fine band
    assert torch.allclose(s_a[..., :2], s_b[..., :2], rtol=0.1)
    assert float(s_0[:, :2, 0].max()) < 0.002
    assert torch.allclose(s_2[:, :, 0], 2 * s_a[:, :, 0], rtol=0.02)


def test_perceptual_loss_is_zero_on_the_target_and_frame_ring_covers_the_glasses(world):
    from synthface.evaluator import AttributeNet
    from synthface.generator_training import TeacherFeatures, _weight_map, perceptual_loss
    torch.manual_seed(0)
    teacher = TeacherFeatures(AttributeNet(3, 2, width=16))
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert float(perceptual_loss(teacher, x, x)) == 0.0
    y = (x + 0.3 * torch.randn_like(x)).requires_grad_(True)
    loss = perceptual_loss(teacher, y, x)
    loss.backward()
    assert float(loss.detach()) > 0.05 and float(y.grad.abs().sum()) > 0
    assert all(p.grad is None for p in teacher.parameters())          # the teacher stays frozen
    teacher.train()
    assert not teacher.training                                         # and in eval mode
    # glasses frames (RGB only) lie in a ring around the eyes: the ring gets frame_weight
    t = world.truth(world.sample_z(64, seed=3))
    t = t[t.glasses > 0.5].head(2)
    rgb, mask = render_batch(t, resolution=64)
    plain, _ = render_batch(t.assign(glasses=0.0), resolution=64)
    frames = np.abs(rgb.astype(int) - plain.astype(int)).sum(-1) > 30
    w = _weight_map(mask, 6.0, frame_weight=3.0)[:, 0].numpy()
    assert frames.sum() > 20 and (w[frames] >= 3.0).mean() > 0.9
    assert np.allclose(_weight_map(mask, 6.0)[:, 0].numpy()[frames].min(), 1.0)   # off by default


def test_adversarial_option_trains_the_discriminator_during_the_regression(world, tmp_path):
    prof = _tiny_profile()
    src = RenderSource(world, lambda t: render_batch(t, resolution=64), 128)
    s = TrainSettings(mapping_warmup_steps=1, warmup_batch_size=8, steps=4, d_steps=0, batch_size=4, ckpt_every=10,
                      log_every=1, threads=1, r1_gamma=1.0, adv_weight=0.1, adv_start=1, r1_every=2,
                      aux_batch_size=8)
    res = train_default_generator(prof, src, tmp_path / "adv", s, show_progress=False)
    g_log = [r for r in res["log"] if "l1" in r]
    assert "adv" not in g_log[0] and all("adv" in r and "d_loss" in r for r in g_log[1:])
    assert ["r1" in r for r in g_log[1:]] == [True, False, True]       # lazy R1 every 2nd D step
    assert all("aux_big" in r for r in g_log)


def test_teacher_attribute_loss_is_zero_on_the_target_and_grows_with_a_wrong_reading():
    """The attribute loss distils the teacher's reading of the render: 0 for the render itself,
    positive for another image, and it gives G(z) a gradient."""
    from synthface.evaluator import AttributeNet
    from synthface.generator_training import TeacherFeatures, perceptual_loss, teacher_losses
    torch.manual_seed(0)
    teacher = TeacherFeatures(AttributeNet(3, 2, width=16))
    x = torch.rand(4, 3, 128, 128) * 2 - 1
    perc, attr = teacher_losses(teacher, x, x)
    assert abs(float(perc)) < 1e-7 and abs(float(attr)) < 1e-6
    y = (torch.rand(4, 3, 128, 128) * 2 - 1).requires_grad_(True)
    perc, attr = teacher_losses(teacher, y, x)
    assert float(attr.detach()) > 0 and torch.isclose(perc, perceptual_loss(teacher, y, x))
    attr.backward()
    assert y.grad is not None and float(y.grad.abs().sum()) > 0
    assert not any(p.requires_grad for p in teacher.parameters())


def test_rare_boost_oversamples_the_rare_flags_and_stays_seeded(world):
    from synthface.generator_training import RenderSource
    from synthface.renderer import render_batch
    plain = RenderSource(world, lambda t: render_batch(t, resolution=32), 128)
    boost = RenderSource(world, lambda t: render_batch(t, resolution=32), 128, rare_boost=1.0)
    share = {}
    for src, name in ((plain, "plain"), (boost, "boost")):
        zs = torch.cat([src.batch(s, 64)[0] for s in range(6)]).numpy()
        t = world.truth(zs)
        share[name] = {k: float((t[k] > 0.5).mean()) for k in ("quality_defect", "glasses", "old")}
    assert share["boost"]["quality_defect"] > 2.5 * max(share["plain"]["quality_defect"], 0.02)
    assert share["boost"]["glasses"] > 1.4 * share["plain"]["glasses"]
    a, b = boost.batch(3, 16), boost.batch(3, 16)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(plain.batch(3, 16, stream=1)[0], boost.batch(3, 16, stream=1)[0])  # other streams untouched
