"""Mapping sharpening of the synthface default generator (synthface/sharpen_mapping.py)."""
import numpy as np
import pytest
import torch

from stylegan import GeneratorConfig, StyleGANGenerator
from synthface.sharpen_mapping import BINARY_FACTORS, Directions, SharpenSettings, sharpen_mapping
from synthface.world import WorldMap


def _clusters(n=4000, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    labels = {k: (rng.random(n) < 0.3).astype(np.float32) for k in BINARY_FACTORS}
    axes = rng.standard_normal((len(BINARY_FACTORS), dim))
    w = rng.standard_normal((n, dim))
    for i, k in enumerate(BINARY_FACTORS):
        w += np.outer(labels[k] - 0.5, axes[i]) * 1.5
    return w.astype(np.float32), labels


def _tiny_g(resolution, w_dim, fmaps, fmaps_max):
    return StyleGANGenerator(GeneratorConfig.from_dict(
        {"resolution": resolution, "z_dim": 128, "w_dim": w_dim, "mapping_layers": 2, "mapping_fmaps": fmaps,
         "fmaps_base": fmaps, "fmaps_max": fmaps_max})).eval()


def test_targets_put_every_coordinate_on_the_true_side_with_the_least_change():
    w, labels = _clusters()
    dirs = Directions.fit(w, labels)
    c0 = dirs.coords(w.astype(np.float64))
    # a typical positive w sits near +0.5, a typical negative one near -0.5
    y0 = labels["female"] > 0.5
    assert c0[y0, 0].mean() == pytest.approx(0.5, abs=0.02) and c0[~y0, 0].mean() == pytest.approx(-0.5, abs=0.02)
    target = dirs.target(w, labels, margin=0.3)
    c = dirs.coords(target.astype(np.float64))
    s = np.stack([np.where(labels[k] > 0.5, 1.0, -1.0) for k in BINARY_FACTORS], 1)
    assert (s * c >= 0.3 - 1e-4).all()
    assert dirs.agreement(target, labels) == {k: 1.0 for k in BINARY_FACTORS}
    # rows already beyond the margin on the true side do not move; moved rows move only in the span
    fine = (s * c0 >= 0.3).all(1)
    assert fine.sum() > 100 and np.abs(target[fine] - w[fine]).max() < 1e-5
    q, _ = np.linalg.qr(dirs.n.T)
    residual = (target - w) - ((target - w) @ q) @ q.T
    assert np.abs(residual).max() < 1e-4
    assert target.dtype == np.float32
    # larger margins on the positive side of chosen factors; the negatives keep theirs
    m_neg, m_pos = SharpenSettings(margin=0.3, positive_margins="glasses=0.8, quality_defect=1.0").margins()
    assert m_neg.tolist() == [0.3] * 4 and m_pos.tolist() == [0.3, 0.8, 0.3, 1.0]
    c2 = dirs.coords(dirs.target(w, labels, m_neg, m_pos).astype(np.float64))
    gl, qd = labels["glasses"] > 0.5, labels["quality_defect"] > 0.5
    assert (c2[gl, 1] >= 0.8 - 1e-4).all() and (c2[qd, 3] >= 1.0 - 1e-4).all()
    assert (c2[~gl, 1] <= -0.3 + 1e-4).all() and c2[~gl, 1].max() > -0.8
    with pytest.raises(ValueError, match="positive_margins"):
        SharpenSettings(positive_margins="beard=2").margins()
    with pytest.raises(ValueError, match="single class"):
        Directions.fit(w, {**labels, "glasses": np.zeros(len(w), np.float32)})


def test_sharpening_trains_the_mapping_towards_the_true_side_and_keeps_the_layout():
    torch.manual_seed(0)
    world = WorldMap(z_dim=128, seed=0)
    g = _tiny_g(16, 32, 64, 16)
    s = SharpenSettings(steps=150, batch_size=256, lr=0.03, n_fit=3000, threads=1, margin=0.3)
    g_new, info, log = sharpen_mapping(g, world, s, show_progress=False)
    before, after = info["direction_sign_agreement_before"], info["direction_sign_agreement_after"]
    assert after["female"] > before["female"] + 0.1 and after["old"] > before["old"] + 0.05
    assert log[-1]["loss"] < log[0]["loss"]
    # same class and keys, loads strictly; the synthesis is untouched, the source is not modified
    fresh = StyleGANGenerator(g.cfg)
    fresh.load_state_dict(g_new.state_dict(), strict=True)
    for k, v in g.state_dict().items():
        if k.startswith("synthesis."):
            assert torch.equal(v, g_new.state_dict()[k]), k
    assert not torch.equal(g.state_dict()["mapping.dense0.weight"], g_new.state_dict()["mapping.dense0.weight"])
    assert not any(p.requires_grad for p in g_new.parameters())
    # seeded: the same settings give the same mapping
    g_again, _, _ = sharpen_mapping(g, world, s, show_progress=False)
    assert torch.equal(g_again.state_dict()["mapping.dense1.weight"], g_new.state_dict()["mapping.dense1.weight"])


def test_interrupted_sharpening_resumes_to_the_same_weights(tmp_path):
    torch.manual_seed(1)
    world = WorldMap(z_dim=128, seed=0)
    g = _tiny_g(8, 16, 32, 8)
    s = SharpenSettings(steps=12, batch_size=64, lr=0.03, n_fit=1500, threads=1, margin=0.3)
    whole, _, log_whole = sharpen_mapping(g, world, s, show_progress=False)
    state = tmp_path / "state.pth"
    assert sharpen_mapping(g, world, s, show_progress=False, state_path=state, ckpt_every=4, stop_after=7)[0] is None
    assert state.is_file()
    resumed, _, log_resumed = sharpen_mapping(g, world, s, show_progress=False, state_path=state, ckpt_every=4)
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert log_resumed == log_whole
    with pytest.raises(ValueError, match="other settings"):
        sharpen_mapping(g, world, SharpenSettings(**{**s.__dict__, "margin": 0.4}), show_progress=False,
                        state_path=state)
