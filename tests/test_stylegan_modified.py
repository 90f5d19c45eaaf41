"""Stage-5 conditional models: layouts at 256, conditioning mechanics, loading rules, freezing, the v3 CVAE."""
import math

import numpy as np
import pytest
import torch

from cnn.property_score_cnn import P3, P7
from pipeline.checkpoint import CheckpointError
from stylegan import DiscriminatorConfig, GeneratorConfig, StyleGANDiscriminator, StyleGANGenerator
from stylegan.layers import pixel_norm
from stylegan_modified import (VERSIONS, CVAEEncoder, ConditionalSpec, FineTuneV3, build_discriminator,
                               build_generator, discriminate, encode, init_discriminator_from, init_generator_from,
                               load_discriminator, load_generator, parameter_groups, save_state_dict, synthesize,
                               trainable_count, z_candidates_from_posterior)
from stylegan_modified.conditional import map_to_w
from stylegan_modified.loading import G_ALLOWED_DIFFERENCES, d_allowed_differences, state_dict_from
from stylegan_modified.training_parts import make_optimizers
from tests.single_thread import one_thread  # noqa: F401  (autouse)

SMALL_G = GeneratorConfig(resolution=32, z_dim=32, w_dim=32, mapping_layers=2, mapping_fmaps=32,
                          fmaps_base=256, fmaps_max=32)
SMALL_D = DiscriminatorConfig(resolution=32, fmaps_base=256, fmaps_max=32)
S7 = ConditionalSpec(P7, 8, 0.9)          # small v1-like
S3 = ConditionalSpec(P3, 8, 0.0)          # small v4-like
S7W = ConditionalSpec(P7, 12, 0.0)        # small v3-like (wider embedding)


def _perturb(model, seed=0):
    """Non-trivial biases / noise strengths so that every term of the forward matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("apply_noise.weight", ".bias")):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def base_g(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _perturb(StyleGANGenerator(SMALL_G), seed).eval()


def base_d(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _perturb(StyleGANDiscriminator(SMALL_D), seed).eval()


def embed7(l3: torch.Tensor) -> torch.Tensor:
    """P3 labels -> P7 labels with the other four at 0."""
    out = torch.zeros(len(l3), 7)
    out[:, [P7.index(p) for p in P3]] = l3
    return out


# ---------------------------------------------------------------- layouts at 256 (construction only)

@pytest.mark.parametrize("version, lw, d0, n_params, mapping_params", [
    ("v1", (7, 16), (512, 528), 26_094_533, 2_109_552),
    ("v3", (7, 24), (512, 536), 26_098_685, 2_113_704),
    ("v4", (3, 16), (512, 528), 26_094_469, 2_109_488),
])
def test_generator_256_layouts(version, lw, d0, n_params, mapping_params):
    g = build_generator(GeneratorConfig(), version)
    sd = g.state_dict()
    base = StyleGANGenerator(GeneratorConfig()).state_dict()
    assert len(sd) == 123
    assert set(sd) == set(base) | {"mapping.label_weight"}
    assert tuple(sd["mapping.label_weight"].shape) == lw
    assert tuple(sd["mapping.dense0.weight"].shape) == d0
    assert all(tuple(sd[k].shape) == tuple(v.shape) for k, v in base.items() if k != "mapping.dense0.weight")
    assert sum(p.numel() for p in g.parameters()) == n_params
    assert math.isclose(g.mapping.dense0.scale, math.sqrt(2) / math.sqrt(d0[1]) * 0.01, rel_tol=1e-12)
    assert math.isclose(g.mapping.dense1.scale, math.sqrt(2) / math.sqrt(512) * 0.01, rel_tol=1e-12)
    groups = parameter_groups(version, generator=g, discriminator=build_discriminator(spec=version)
                              if version != "v3" else None, encoder=CVAEEncoder() if version == "v3" else None)
    first = next(iter(groups.values()))[0]
    assert sum(p.numel() for p in first["params"]) == mapping_params == trainable_count(g)


@pytest.mark.parametrize("version, w14, n_params, trainable", [
    ("v1", (1, 519), 23_052_360, 6_559_752),
    ("v4", (1, 515), 23_052_356, 6_559_748),
])
def test_discriminator_256_layouts(version, w14, n_params, trainable):
    d = build_discriminator(DiscriminatorConfig(), version)
    sd = d.state_dict()
    base = StyleGANDiscriminator(DiscriminatorConfig()).state_dict()
    assert len(sd) == 51 and set(sd) == set(base)
    assert tuple(sd["layer14.weight"].shape) == w14
    assert all(tuple(sd[k].shape) == tuple(v.shape) for k, v in base.items() if k != "layer14.weight")
    assert sum(p.numel() for p in d.parameters()) == n_params
    assert math.isclose(d.head.scale, 1 / math.sqrt(w14[1]), rel_tol=1e-12)
    assert d.cfg.mbstd_group_size == 16 and d.layer12.mbstd_group == 16
    assert d_allowed_differences(d) == ("layer14.weight", "layer14.bias")
    groups = parameter_groups(version, generator=build_generator(SMALL_G, VERSIONS[version]), discriminator=d)
    assert groups["discriminator"][0]["name"] == "discriminator.layer12-14"
    assert trainable_count(d) == trainable
    assert {n.split(".")[0] for n, p in d.named_parameters() if p.requires_grad} == {"layer12", "layer13", "layer14"}


def test_cvae_encoder_256_layout_and_v3_groups():
    e = CVAEEncoder()
    shapes = {k: tuple(v.shape) for k, v in e.state_dict().items()}
    assert list(shapes) == [f"conv{i}.0.{t}" for i in range(1, 6) for t in ("weight", "bias")] + [
        "fc1.0.weight", "fc1.0.bias", "fc2_mu.weight", "fc2_mu.bias", "fc2_var.weight", "fc2_var.bias"]
    assert [shapes[f"conv{i}.0.weight"] for i in range(1, 6)] == [(32, 3, 4, 4), (64, 32, 4, 4), (128, 64, 4, 4),
                                                                 (128, 128, 4, 4), (256, 128, 4, 4)]
    assert shapes["fc1.0.weight"] == (512, 16391)
    assert shapes["fc2_mu.weight"] == shapes["fc2_var.weight"] == (512, 519)
    assert sum(p.numel() for p in e.parameters()) == 9_877_600
    assert e.conv1[0].padding_mode == "reflect"
    g = build_generator(GeneratorConfig(), "v3")
    groups = parameter_groups("v3", generator=g, encoder=e)["cvae"]
    assert [(x["name"], x["lr"]) for x in groups] == [("generator.mapping", 1e-4), ("encoder", 1e-5)]
    assert [sum(p.numel() for p in x["params"]) for x in groups] == [2_113_704, 9_877_600]
    wrapper = FineTuneV3(e, g)
    assert [n for n, _ in wrapper.named_children()] == ["CVAE_encoder", "stylegan_generator"]
    assert set(wrapper.checkpoint_states()) == {"generator", "encoder"}


def test_versions_presets():
    assert {v: (s.label_dim, s.embed_dim, s.style_mixing_prob) for v, s in VERSIONS.items()} == {
        "v1": (7, 16, 0.9), "v2": (7, 16, 0.0), "v3": (7, 24, 0.0), "v4": (3, 16, 0.0)}
    assert VERSIONS["v4"].label_names == ("eyes", "mouth", "pose")
    with pytest.raises(ValueError, match="unknown conditional version 'v7'"):
        build_generator(SMALL_G, "v7")


# ---------------------------------------------------------------- conditioning mechanics

def test_mapping_concatenates_embedding_before_pixel_norm():
    g = build_generator(SMALL_G, S7, seed=3).eval()
    z, label = torch.randn(4, 32), torch.randn(4, 7)
    out = g.mapping(z, label)
    e = label @ g.mapping.label_weight
    assert torch.allclose(out["embedding"], e)
    assert torch.allclose(out["z"], pixel_norm(torch.cat([z, e], 1)))
    x = out["z"]
    for i in range(SMALL_G.mapping_layers):
        x = getattr(g.mapping, f"dense{i}")(x)
    assert torch.equal(out["w"], x)
    assert list(g.state_dict())[0] == "mapping.label_weight"    # own parameter first, as in the original


def test_label_is_mandatory_and_shape_checked():
    g = build_generator(SMALL_G, S7).eval()
    d = build_discriminator(SMALL_D, S7).eval()
    z = torch.randn(2, 32)
    with pytest.raises(ValueError, match=r"a label of shape \[2, 7\] is required"):
        g.mapping(z)
    with pytest.raises(ValueError, match=r"label must have shape \[2, 7\], got \(2, 3\)"):
        g(z, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"label must have shape \[2, 7\], got \(7,\)"):
        synthesize(g, z, torch.zeros(7))
    with pytest.raises(ValueError, match=r"label must have shape \[2, 7\]"):
        d(torch.zeros(2, 3, 32, 32), torch.zeros(2, 6))
    with pytest.raises(TypeError):
        g(z)                                                   # no label-free path


def test_float64_labels_are_cast_to_float32():
    g = build_generator(SMALL_G, S7, seed=1).eval()
    d = build_discriminator(SMALL_D, S7, seed=1).eval()
    z = np.random.default_rng(0).standard_normal((2, 32))
    lab64 = np.random.default_rng(1).standard_normal((2, 7))             # float64
    out = g.mapping(torch.as_tensor(z, dtype=torch.float32), torch.as_tensor(lab64))
    assert out["label"].dtype == out["embedding"].dtype == out["w"].dtype == torch.float32
    img64 = synthesize(g, z, lab64)
    img32 = synthesize(g, z.astype(np.float32), lab64.astype(np.float32))
    assert img64.dtype == torch.float32 and torch.equal(img64, img32)
    with torch.no_grad():
        assert torch.equal(g(torch.as_tensor(z), torch.as_tensor(lab64))["image"], img32)
    s64 = discriminate(d, img32, lab64)
    assert s64.dtype == torch.float32 and torch.equal(s64, discriminate(d, img32, lab64.astype(np.float32)))


def test_inference_helpers_build_no_graph_and_are_batch_independent():
    g = build_generator(SMALL_G, S7, seed=2).train()
    d = build_discriminator(SMALL_D, S7, seed=2).train()
    z, lab = torch.randn(4, 32), torch.randn(4, 7)
    w_avg = g.truncation.w_avg.clone()
    img = synthesize(g, z, lab)
    for t in (img, map_to_w(g, z, lab), discriminate(d, img, lab), g.render(z, lab)):
        assert t.grad_fn is None and not t.requires_grad and torch.is_inference(t)
    assert torch.equal(g.truncation.w_avg, w_avg)                  # eval semantics even in training mode
    assert torch.allclose(synthesize(g, z, lab, batch_size=1), img, atol=2e-4)        # values up to ~10
    assert discriminate(d, img, lab, batch_size=2).shape == (4, 1)   # mbstd couples a batch: values differ
    mu, logvar = encode(CVAEEncoder(32, 7, 32, channels=(4, 4, 8, 8, 8), hidden=16), img, lab)
    assert mu.shape == logvar.shape == (4, 32) and torch.is_inference(mu)


def test_style_mixing_second_latent_gets_the_same_label():
    g = build_generator(SMALL_G, S7, seed=4).train()
    z, lab = torch.randn(3, 32), torch.randn(3, 7)
    out = g(z, lab, style_mixing_prob=1.0, generator=torch.Generator().manual_seed(11))
    z2 = torch.randn(z.shape, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        w, w2 = g.mapping(z, lab)["w"], g.mapping(z2, lab)["w"]
        w2_other = g.mapping(z2, torch.randn(3, 7))["w"]
    wp = out["wp"].detach()
    assert torch.allclose(wp[:, 0], w, atol=1e-6)
    assert torch.allclose(wp[:, -1], w2, atol=1e-6)
    assert not torch.allclose(wp[:, -1], w2_other, atol=1e-3)


def test_style_mixing_default_follows_the_preset():
    z, lab = torch.randn(2, 32), torch.randn(2, 7)
    g_mix = build_generator(SMALL_G, S7, seed=5).train()        # preset p 0.9
    g_no = build_generator(SMALL_G, S7W, seed=5).train()        # preset p 0
    with torch.no_grad():
        mixed = [g_mix(z, lab, generator=torch.Generator().manual_seed(s))["wp"] for s in range(6)]
        plain = [g_no(z, lab, generator=torch.Generator().manual_seed(s))["wp"] for s in range(2)]
    assert any(not torch.allclose(m[:, -1], m[:, 0]) for m in mixed)
    assert torch.allclose(plain[0], plain[1]) and torch.allclose(plain[0][:, -1], plain[0][:, 0])


def test_discriminator_joins_label_before_last_dense():
    d = _perturb(build_discriminator(SMALL_D, S7, seed=6)).eval()
    x, lab = torch.randn(4, 3, 32, 32), torch.randn(4, 7)
    with torch.no_grad():
        f = d.features(x)
        manual = torch.nn.functional.linear(torch.cat([f, lab], 1), d.head.weight * d.head.scale, d.head.bias)
        assert torch.allclose(d(x, lab), manual, atol=1e-6)
        assert not torch.allclose(d(x, lab), d(x, lab + 1.0))
    assert d.head.weight.shape == (1, 32 + 7) and math.isclose(d.head.scale, 1 / math.sqrt(39))


def test_mbstd_group_16_is_one_group_over_batch_of_16_and_15():
    d = build_discriminator(SMALL_D, S7, seed=7).eval()
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        feats = d.input0(x)
        for i in range(d.head_index - 2):
            feats = getattr(d, f"layer{i}")(feats)
        std = torch.sqrt(feats.var(dim=0, unbiased=False) + 1e-8).mean()
        from stylegan.layers import minibatch_stddev
        extra = minibatch_stddev(feats, 16)[:, -1]
        assert torch.allclose(extra, std.expand_as(extra), atol=1e-6)       # one group of 16
        assert d(x[:15], torch.zeros(15, 7)).shape == (15, 1)               # last batch of an epoch: group 15
    with pytest.raises(ValueError, match="not divisible by group size 16"):
        d(torch.randn(20, 3, 32, 32), torch.zeros(20, 7))


# ---------------------------------------------------------------- loading rules

def test_generator_from_base_keeps_z_columns_and_reproduces_base_at_label_zero():
    base = base_g(0)
    g = build_generator(SMALL_G, S7, seed=9).eval()
    done = init_generator_from(g, base.state_dict())
    assert done == {"mapping.label_weight": "fresh randn init",
                    "mapping.dense0.weight": "source's z columns, label columns zero"}
    w = g.mapping.dense0.weight
    assert torch.equal(w[:, :32], base.mapping.dense0.weight) and torch.count_nonzero(w[:, 32:]) == 0
    assert torch.equal(g.mapping.label_weight, build_generator(SMALL_G, S7, seed=9).mapping.label_weight)
    z = torch.randn(4, 32)
    from stylegan.sampling import generate
    ref = generate(base, z)
    assert torch.allclose(synthesize(g, z, torch.zeros(4, 7)), ref, atol=1e-4)       # values up to ~10
    other = synthesize(g, z, torch.randn(4, 7))
    assert not torch.allclose(other, ref, atol=1e-3)
    for k, v in base.state_dict().items():                          # everything else is the base's
        if k not in G_ALLOWED_DIFFERENCES:
            assert torch.equal(g.state_dict()[k], v), k


def test_generator_from_base_reinit_option_changes_behaviour():
    base = base_g(0)
    g = build_generator(SMALL_G, S7, seed=9).eval()
    done = init_generator_from(g, base.state_dict(), dense0="reinit")
    assert "fresh init" in done["mapping.dense0.weight"]
    fresh = build_generator(SMALL_G, S7, seed=9)
    assert torch.equal(g.mapping.dense0.weight, fresh.mapping.dense0.weight)
    assert torch.equal(g.mapping.dense0.bias, base.mapping.dense0.bias)
    z = torch.randn(4, 32)
    from stylegan.sampling import generate
    assert (synthesize(g, z, torch.zeros(4, 7)) - generate(base, z)).abs().mean() > 0.05


def test_generator_loading_names_every_other_difference():
    g = build_generator(SMALL_G, S7)
    sd = base_g().state_dict()
    bad = dict(sd)
    del bad["synthesis.layer3.style.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys: synthesis\.layer3\.style\.bias"):
        init_generator_from(g, bad)
    bad = dict(sd, **{"mapping.extra": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unexpected keys: mapping\.extra"):
        init_generator_from(g, bad)
    bad = dict(sd, **{"mapping.dense1.weight": torch.zeros(32, 31)})
    with pytest.raises(CheckpointError, match=r"mis-shaped keys: mapping\.dense1\.weight \(checkpoint \(32, 31\)"):
        init_generator_from(g, bad)
    bad = dict(sd, **{"mapping.dense0.weight": torch.zeros(32, 30)})
    with pytest.raises(CheckpointError, match=r"mapping\.dense0\.weight \(checkpoint \(32, 30\)"):
        init_generator_from(g, bad)
    cond = build_generator(SMALL_G, S7).state_dict()
    with pytest.raises(CheckpointError, match="it is conditional; pass source_spec"):
        init_generator_from(g, cond)
    with pytest.raises(CheckpointError, match=r"mis-shaped keys: mapping\.label_weight \(checkpoint \(7, 8\), "
                                              r"source_spec \(3, 8\)"):
        init_generator_from(g, cond, source_spec=S3)


def test_v4_from_v1_selects_rows_and_equals_v1_with_other_labels_zero():
    g1 = _perturb(build_generator(SMALL_G, S7, seed=1)).eval()
    d1 = _perturb(build_discriminator(SMALL_D, S7, seed=1)).eval()
    g4 = build_generator(SMALL_G, S3, seed=2).eval()
    d4 = build_discriminator(SMALL_D, S3, seed=2).eval()
    done_g = init_generator_from(g4, g1.state_dict(), source_spec=S7)
    done_d = init_discriminator_from(d4, d1.state_dict(), source_spec=S7)
    assert done_g["mapping.label_weight"].startswith("rows [0, 3, 4]")
    assert torch.equal(g4.mapping.dense0.weight, g1.mapping.dense0.weight)      # v4 keeps v1's dense0 whole
    z, l3 = torch.randn(4, 32), torch.randn(4, 3)
    img4 = synthesize(g4, z, l3)
    assert torch.allclose(img4, synthesize(g1, z, embed7(l3)), atol=1e-6)
    assert "label columns [0, 3, 4]" in done_d["layer8.weight"]
    assert torch.allclose(discriminate(d4, img4, l3), discriminate(d1, img4, embed7(l3)), atol=1e-5)
    # the original's start: fresh label_weight and dense0, fresh D head
    g4o = build_generator(SMALL_G, S3, seed=2).eval()
    init_generator_from(g4o, g1.state_dict(), source_spec=S7, dense0="reinit", label_weight="fresh")
    fresh = build_generator(SMALL_G, S3, seed=2)
    assert torch.equal(g4o.mapping.label_weight, fresh.mapping.label_weight)
    assert torch.equal(g4o.mapping.dense0.weight, fresh.mapping.dense0.weight)
    assert not torch.allclose(synthesize(g4o, z, l3), img4, atol=1e-3)


def test_v3_from_v1_keeps_z_columns_zero_label_columns():
    g1 = _perturb(build_generator(SMALL_G, S7, seed=1)).eval()
    g3 = build_generator(SMALL_G, S7W, seed=3).eval()
    done = init_generator_from(g3, g1.state_dict(), source_spec=S7)
    assert done["mapping.dense0.weight"] == "source's z columns, label columns zero"
    assert g3.mapping.dense0.weight.shape == (32, 44)
    assert torch.equal(g3.mapping.dense0.weight[:, :32], g1.mapping.dense0.weight[:, :32])
    assert torch.count_nonzero(g3.mapping.dense0.weight[:, 32:]) == 0
    z = torch.randn(3, 32)
    assert torch.allclose(synthesize(g3, z, torch.zeros(3, 7)), synthesize(g1, z, torch.zeros(3, 7)), atol=1e-4)


def test_discriminator_from_base_keeps_scores_and_reinit_option():
    base = base_d(0)
    d = build_discriminator(SMALL_D, S7, seed=5).eval()
    done = init_discriminator_from(d, base.state_dict())
    assert "rescaled by" in done["layer8.weight"] and done["layer8.bias"] == "source's"
    factor = math.sqrt(39 / 32)
    assert torch.allclose(d.head.weight[:, :32], base.head.weight * factor)
    assert torch.count_nonzero(d.head.weight[:, 32:]) == 0
    x = torch.randn(4, 3, 32, 32)                 # batch 4: the base's group 4 and our 16 coincide
    with torch.no_grad():
        ref = base(x)
    assert torch.allclose(discriminate(d, x, torch.randn(4, 7)), ref, atol=1e-5)
    d2 = build_discriminator(SMALL_D, S7, seed=5).eval()
    init_discriminator_from(d2, base.state_dict(), head="reinit")
    assert torch.count_nonzero(d2.head.bias) == 0
    assert torch.equal(d2.head.weight, build_discriminator(SMALL_D, S7, seed=5).head.weight)
    assert not torch.allclose(discriminate(d2, x, torch.zeros(4, 7)), ref, atol=1e-3)
    bad = dict(base.state_dict())
    del bad["layer3.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys: layer3\.bias"):
        init_discriminator_from(d, bad)


def test_save_load_round_trip_is_strict(tmp_path):
    g = _perturb(build_generator(SMALL_G, S7, seed=8)).eval()
    d = _perturb(build_discriminator(SMALL_D, S7, seed=8)).eval()
    save_state_dict(g, tmp_path / "g.pth")
    save_state_dict(d, tmp_path / "d.pth")
    g2 = load_generator(tmp_path / "g.pth", SMALL_G, S7)
    d2 = load_discriminator(tmp_path / "d.pth", SMALL_D, S7)
    for a, b in ((g, g2), (d, d2)):
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    z, lab = torch.randn(2, 32), torch.randn(2, 7)
    assert torch.equal(synthesize(g, z, lab), synthesize(g2, z, lab))
    with pytest.raises(CheckpointError, match=r"mis-shaped keys: mapping\.label_weight \(checkpoint \(7, 8\), "
                                              r"model \(3, 8\)\)"):
        load_generator(tmp_path / "g.pth", SMALL_G, S3)
    torch.save({"generator": g.state_dict(), "epoch": torch.tensor(3)}, tmp_path / "wrapped.pth")
    assert torch.equal(synthesize(load_generator(tmp_path / "wrapped.pth", SMALL_G, S7, key="generator"), z, lab),
                       synthesize(g, z, lab))
    with pytest.raises(CheckpointError, match=r"not a plain state dict.*\['epoch', 'generator'\]"):
        load_generator(tmp_path / "wrapped.pth", SMALL_G, S7)
    with pytest.raises(CheckpointError, match="has no 'gen' entry"):
        state_dict_from(tmp_path / "wrapped.pth", key="gen")


# ---------------------------------------------------------------- freezing / optimisers

def test_parameter_groups_freeze_synthesis_and_early_discriminator_layers():
    g = build_generator(SMALL_G, S7, seed=1).train()
    d = build_discriminator(SMALL_D, S7, seed=1).train()
    groups = parameter_groups("v1", generator=g, discriminator=d)
    opts = make_optimizers(groups)
    assert opts["generator"].defaults["weight_decay"] == 0.01 and opts["generator"].param_groups[0]["lr"] == 1e-4
    g_names = {n for n, p in g.named_parameters() if p.requires_grad}
    assert g_names == {n for n, _ in g.named_parameters() if n.startswith("mapping.")}
    assert "mapping.label_weight" in g_names
    assert {n.split(".")[0] for n, p in d.named_parameters() if p.requires_grad} == {"layer6", "layer7", "layer8"}
    z, lab = torch.randn(4, 32), torch.randn(4, 7)
    loss = torch.nn.functional.softplus(-d(g(z, lab, style_mixing_prob=0.0)["image"], lab)).mean()
    loss.backward()
    assert all(p.grad is None for n, p in g.named_parameters() if not n.startswith("mapping."))
    assert g.mapping.dense0.weight.grad is not None and g.mapping.label_weight.grad is not None
    assert all(p.grad is None for n, p in d.named_parameters() if n.split(".")[0] not in ("layer6", "layer7", "layer8"))
    with pytest.raises(ValueError, match="not 'v2'"):
        parameter_groups("v2", generator=g, discriminator=d)
    with pytest.raises(ValueError, match="v3 needs the CVAE encoder"):
        parameter_groups("v3", generator=g)


# ---------------------------------------------------------------- v3 CVAE

def test_finetune_v3_forward_seeded_and_gender_input_range():
    enc = CVAEEncoder(32, 7, 32, channels=(4, 4, 8, 8, 8), hidden=16)
    g = build_generator(SMALL_G, S7W, seed=2)
    seen = {}

    class Gender(torch.nn.Module):
        def forward(self, x):
            seen["min"], seen["max"] = float(x.detach().min()), float(x.detach().max())
            return x.mean(dim=(1, 2, 3))

    class Prop(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3)).repeat(1, 3)[:, :7]

    m = FineTuneV3(enc, g, Prop(), Gender())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    lab = torch.randn(2, 7, dtype=torch.float64)
    a = m(x, lab, generator=torch.Generator().manual_seed(1))
    b = m(x, lab, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a["z"], b["z"]) and a["image"].shape == (2, 3, 32, 32)
    assert a["mu"].shape == a["logvar"].shape == (2, 32) and a["property"].shape == (2, 7)
    img = a["image"].detach()
    assert math.isclose(seen["min"], float((img.min() + 1) / 2), abs_tol=1e-5)
    assert torch.allclose(a["z"], a["mu"] + torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
                          * torch.exp(0.5 * a["logvar"]), atol=1e-6)
    signed = FineTuneV3(enc, g, None, Gender(), gender_input="signed")
    signed(x, lab, generator=torch.Generator().manual_seed(1))
    assert math.isclose(seen["min"], float(img.min()), abs_tol=1e-5)
    zc = z_candidates_from_posterior(a["mu"].detach(), a["logvar"].detach(), seed=4)
    assert torch.equal(zc, z_candidates_from_posterior(a["mu"].detach(), a["logvar"].detach(), seed=4))
    with pytest.raises(ValueError, match="multiple of 32"):
        CVAEEncoder(48)
    with pytest.raises(ValueError, match="does not fit the generator"):
        FineTuneV3(CVAEEncoder(32, 3, 32, channels=(4, 4, 8, 8, 8), hidden=16), g)


def test_conditional_models_start_from_the_shipped_synthface_weights():
    """The default profile's base G / D load through the allowed-differences rule and are reproduced."""
    from pipeline.profiles import load_profile
    from pipeline.checkpoint import read_checkpoint, select_entry
    from stylegan.sampling import build_generator as build_base
    from stylegan.sampling import generate
    prof = load_profile("synthface")
    gcfg, dcfg = GeneratorConfig.from_dict(prof["generator"]), DiscriminatorConfig.from_dict(prof["discriminator"])
    path = prof.path(prof["generator_checkpoint"])
    ckpt = read_checkpoint(path)
    g = build_generator(gcfg, "v1")
    init_generator_from(g, select_entry(ckpt, "generator", path))
    assert g.mapping.dense0.weight.shape == (512, 256 + 16)
    z = torch.randn(2, 256)
    assert torch.allclose(synthesize(g.eval(), z, torch.zeros(2, 7)), generate(build_base(prof), z), atol=1e-4)
    d = build_discriminator(dcfg, "v4")
    from stages.bases import base_discriminator_state
    base_d_state, _ = base_discriminator_state(prof)        # the shipped discriminator.pth
    init_discriminator_from(d, base_d_state)
    base = StyleGANDiscriminator(dcfg).eval()
    base.load_state_dict(base_d_state)
    assert d.head.weight.shape == (1, base.head.weight.shape[1] + 3)
    x = torch.rand(4, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(discriminate(d.eval(), x, torch.randn(4, 3)), base(x), atol=1e-4)
