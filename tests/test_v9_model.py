"""FineTune-v9 model: key order and size at 256 px, the v1 -> v9 start, extraction points, the regressed start."""
import numpy as np
import pytest
import torch

from pipeline.checkpoint import CheckpointError
from stylegan.discriminator import DiscriminatorConfig
from stylegan.generator import GeneratorConfig
from stylegan_modified.conditional import build_generator, synthesize
from stylegan_modified.loading import save_state_dict
from stylegan_modified.v9 import (NEW_BRANCH_KEYS, POINTS, branch_stats, build_v9_discriminator, build_v9_generator,
                                  concept_directions, concept_shift, init_v9_from_v1, load_v9_discriminator, load_v9_generator,
                                  regress_new_branch, widen_off)

TINY_G = dict(resolution=32, z_dim=32, w_dim=24, mapping_fmaps=40, fmaps_base=256, fmaps_max=32)
TINY_D = DiscriminatorConfig(resolution=32, fmaps_base=256, fmaps_max=32)


def tiny_cfg(layers=4):
    return GeneratorConfig(mapping_layers=layers, **TINY_G)


def expected_keys_256():
    """02a §C.1, written out from its rules."""
    keys = ["mapping.label_weight"]
    for i in range(8):
        keys += [f"mapping.dense{i}.weight", f"mapping.dense{i}.bias"]
    keys += [f"mapping.dense_new{i}.{p}" for i in (0, 1) for p in ("weight", "bias")]
    keys += ["truncation.w_avg", "synthesis.lod"]
    for b in range(7):
        for layer in (2 * b, 2 * b + 1):
            pre = f"synthesis.layer{layer}."
            keys += [pre + "bias", pre + ("const" if layer == 0 else "weight"), pre + "apply_noise.weight",
                     pre + "apply_noise.noise", pre + "style.weight", pre + "style.bias"]
            if layer % 2 == 0 and layer > 0:
                keys.append(pre + "blur.kernel")
        keys += [f"synthesis.output{b}.bias", f"synthesis.output{b}.weight"]
    return keys


def test_256_keys_order_size_strict_roundtrip_and_v1_start(tmp_path):
    g = build_v9_generator(seed=1)
    sd = g.state_dict()
    assert len(sd) == 127
    assert list(sd) == expected_keys_256()
    assert sum(p.numel() for p in g.parameters()) == 28_194_245
    assert tuple(sd["mapping.dense_new0.weight"].shape) == (2048, 512)
    assert tuple(sd["mapping.dense_new1.weight"].shape) == (512, 2048)
    save_state_dict(g, tmp_path / "g9.pth")
    back = load_v9_generator(tmp_path / "g9.pth")
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in sd.items())
    broken = dict(sd)
    broken.pop("synthesis.layer3.weight")
    with pytest.raises(CheckpointError, match="synthesis.layer3.weight"):
        load_v9_generator(broken)
    # v1 -> v9: exactly the four new keys are missing; the rest is v1's
    v1 = build_generator(spec="v1", seed=2).state_dict()
    g9 = build_v9_generator(seed=3)
    done = init_v9_from_v1(g9, v1, seed=11)
    assert done["missing"] == list(NEW_BRANCH_KEYS) and done["unexpected"] == []
    sd9 = g9.state_dict()
    assert all(torch.equal(sd9[k], v) for k, v in v1.items())
    for k in NEW_BRANCH_KEYS:
        tol = 5 * 0.15 / sd9[k].numel() ** 0.5                                       # 5 standard errors
        assert abs(float(sd9[k].std()) - 0.15) < tol and abs(float(sd9[k].mean())) < tol, k


def test_v1_start_is_seeded_and_other_differences_are_named():
    cfg = tiny_cfg()
    v1 = build_generator(cfg, "v1", seed=0).state_dict()
    a, b, c = (build_v9_generator(cfg, seed=s) for s in (5, 6, 7))
    init_v9_from_v1(a, v1, seed=3)
    init_v9_from_v1(b, v1, seed=3)
    init_v9_from_v1(c, v1, seed=4)
    gen = torch.Generator().manual_seed(3)
    for k, p in zip(NEW_BRANCH_KEYS, a.mapping.new_parameters()):
        assert torch.equal(p, torch.randn(p.shape, generator=gen) * 0.15)           # drawn in key order from seed 3
        assert torch.equal(a.state_dict()[k], b.state_dict()[k])
        assert not torch.equal(a.state_dict()[k], c.state_dict()[k])
    # v9 starts as v1: the new branch's effective output is tiny
    z, y = torch.randn(16, cfg.z_dim), torch.randn(16, 7)
    with torch.no_grad():
        w1 = build_generator(cfg, "v1", seed=0).eval().mapping(z, y)["w"]
        w9 = a.eval().mapping(z, y)
    assert torch.allclose(w9["w"], w9["w1_"] + w9["w2_"])
    assert torch.allclose(w9["w1_"], w1, atol=1e-6)
    assert float((w9["w"] - w1).norm() / w1.norm()) < 0.05
    extra = {**v1, "mapping.dense9.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="unexpected keys: mapping.dense9.weight"):
        init_v9_from_v1(a, extra)
    less = {k: v for k, v in v1.items() if k != "mapping.dense1.bias"}
    with pytest.raises(CheckpointError, match="missing keys: mapping.dense1.bias"):
        init_v9_from_v1(a, less)
    with pytest.raises(CheckpointError, match="not a v1 checkpoint"):
        init_v9_from_v1(a, a.state_dict())


def test_discriminator_loads_strictly():
    d = build_v9_discriminator(TINY_D, seed=1)
    sd = d.state_dict()
    back = load_v9_discriminator(sd, TINY_D)
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in sd.items())
    with pytest.raises(CheckpointError, match="missing keys: layer3.bias"):
        load_v9_discriminator({k: v for k, v in sd.items() if k != "layer3.bias"}, TINY_D)


@pytest.mark.parametrize("layers", [4, 2])
def test_remaining_net_reproduces_the_forward_at_every_point(layers):
    cfg = tiny_cfg(layers)
    g = build_v9_generator(cfg, seed=0, init_std=40.0).eval()       # a visible new branch
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(6, cfg.z_dim)), rng.normal(size=(6, 7))
    ref = synthesize(g, z, y)
    split = (cfg.z_dim + 16) if layers == 2 else cfg.mapping_fmaps
    dims = {"w": cfg.w_dim, "mapping_split1": cfg.mapping_fmaps + 4 * cfg.w_dim,
            "mapping_split2": 2 * cfg.w_dim}
    assert g.mapping.dense_new0.weight.shape[1] == split
    for p in POINTS:
        mid = g.mid_vectors(z, y, p, batch_size=4)
        assert mid.shape == (6, g.mid_dim(p)) == (6, dims[p])
        out = g.image_from_mid(mid, p, batch_size=4)
        assert torch.allclose(out, ref, atol=1e-4), p                   # batching changes float rounding only
    # an edit of mapping_split2 (a, b) is the w edit a + b
    v = torch.randn(1, 2 * cfg.w_dim)
    e2 = g.image_from_mid(g.mid_vectors(z, y, "mapping_split2") + v, "mapping_split2")
    ew = g.image_from_mid(g.mid_vectors(z, y, "w") + v[:, :cfg.w_dim] + v[:, cfg.w_dim:], "w")
    assert torch.allclose(e2, ew, atol=1e-4)
    with pytest.raises(ValueError, match="extraction point"):
        g.mid_dim("w2")


def test_branch_stats_new_branch_starts_small():
    g = build_v9_generator(tiny_cfg(), seed=0)
    st = branch_stats(g, torch.randn(64, 32), np.zeros((64, 7), np.float32))
    assert st["norm_ratio_w2_w1"] < 0.05
    assert 0 <= st["var_share_mapping_split2"] < 0.01


def test_concept_shift_meets_every_margin_and_leaves_satisfied_w():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(200, 24))
    u = rng.normal(size=(3, 24))
    dw = concept_shift(w, u, np.zeros(3), margin=0.5)
    un = u / np.linalg.norm(u, axis=1, keepdims=True)
    assert ((w + dw) @ un.T >= 0.5 - 1e-4).all()
    ok = ((w @ un.T) >= 0.5).all(1)
    assert ok.any() and np.allclose(dw[ok], 0)


def test_widen_off_scales_the_spread_off_the_concept_directions_only():
    """The concept-side projections (what the shift set) do not move; the rest of the deviation from
    the mean grows by the factor; factor 1 is no change."""
    rng = np.random.default_rng(2)
    w = rng.normal(size=(400, 24)) + 3.0
    u = rng.normal(size=(3, 24))
    dw = widen_off(w, u, 1.25)
    assert dw.dtype == np.float32
    assert np.abs(dw @ u.T).max() < 1e-4
    q, _ = np.linalg.qr(u.T)
    off = lambda x: (x - x.mean(0)) - ((x - x.mean(0)) @ q) @ q.T          # noqa: E731
    assert np.allclose(off(w + dw), 1.25 * off(w), atol=1e-5)
    assert np.allclose((w + dw).mean(0), w.mean(0), atol=1e-5)
    assert np.array_equal(widen_off(w, u, 1.0), np.zeros_like(dw))


def test_concept_directions_are_class_mean_directions():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(400, 8))
    pos = np.stack([w[:, 0] + 0.1 * rng.normal(size=400) > 0.3, w[:, 1] < 0], 1)
    dirs, offs = concept_directions(w, pos)
    assert np.allclose(np.linalg.norm(dirs, axis=1), 1, atol=1e-6)
    assert dirs[0, 0] > 0.9 and dirs[1, 1] < -0.9                                  # toward the positive class
    assert 0.1 < offs[0] / dirs[0, 0] < 0.6 and abs(offs[1]) < 0.2
    with pytest.raises(ValueError, match="both classes"):
        concept_directions(w, np.ones((400, 1), bool))


@pytest.mark.parametrize("method", ["lstsq", "adam"])
def test_regress_new_branch_moves_w_by_the_target(method):
    cfg = tiny_cfg()
    g = build_v9_generator(cfg, seed=0).eval()
    rng = np.random.default_rng(2)
    z, z_test = rng.normal(size=(600, cfg.z_dim)), rng.normal(size=(200, cfg.z_dim))
    zeros = np.zeros((600, 7), np.float32)
    w0 = g.mapping(torch.as_tensor(z, dtype=torch.float32), zeros)["w1_"].detach().numpy()
    u = rng.normal(size=(2, cfg.w_dim))
    off = np.median(w0 @ (u / np.linalg.norm(u, axis=1, keepdims=True)).T, axis=0)
    target = concept_shift(w0, u, off, margin=0.3)           # the margin absorbs the fit error
    fit = regress_new_branch(g, z, target, method=method, steps=150, seed=0)
    assert fit["r2"] > {"lstsq": 0.45, "adam": 0.85}[method], fit
    before = g.mapping(torch.as_tensor(z_test, dtype=torch.float32), np.zeros((200, 7), np.float32))
    un = u / np.linalg.norm(u, axis=1, keepdims=True)
    side0 = ((before["w1_"].detach().numpy() @ un.T) >= off).all(1).mean()
    side1 = ((before["w"].detach().numpy() @ un.T) >= off).all(1).mean()
    assert side0 < 0.4 and side1 > {"lstsq": 0.7, "adam": 0.85}[method], (side0, side1)           # held-out z move to the concept side
    assert torch.equal(before["w1_"], g.mapping(torch.as_tensor(z_test, dtype=torch.float32),
                                                np.zeros((200, 7), np.float32))["w1_"])
