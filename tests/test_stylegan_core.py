"""StyleGAN core: layout, strict loading, numerics of each block, forward options."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.checkpoint import CheckpointError, load_state_dict_strict, read_checkpoint, save_checkpoint, select_entry
from stylegan import DiscriminatorConfig, GeneratorConfig, StyleGANDiscriminator, StyleGANGenerator, postprocess
from stylegan.layers import SynthesisLayer, minibatch_stddev
from stylegan.sampling import build_generator, generate

SMALL = GeneratorConfig(resolution=32, z_dim=32, w_dim=32, mapping_layers=2, mapping_fmaps=32,
                        fmaps_base=256, fmaps_max=32)


def small_g(seed=0):
    torch.manual_seed(seed)
    g = StyleGANGenerator(SMALL)
    # non-trivial noise strengths / biases so every term matters
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith(("apply_noise.weight", ".bias")):
                p.normal_(0, 0.1)
    return g.eval()


# ---------------------------------------------------------------- layout at 256 (GenForce celeba-partial-256x256)

def test_generator_256_layout_matches_genforce():
    g = StyleGANGenerator(GeneratorConfig())
    sd = g.state_dict()
    assert len(sd) == 122
    assert sum(p.numel() for p in g.parameters()) == 26_086_229
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["mapping.dense0.weight"] == (512, 512)
    assert shapes["truncation.w_avg"] == (512,)
    assert shapes["synthesis.lod"] == ()
    assert shapes["synthesis.layer0.const"] == (1, 512, 4, 4)
    assert "synthesis.layer0.weight" not in shapes
    assert shapes["synthesis.layer8.weight"] == (256, 512, 3, 3)
    assert shapes["synthesis.layer10.apply_noise.noise"] == (1, 1, 128, 128)
    assert shapes["synthesis.layer12.style.weight"] == (128, 512)
    assert shapes["synthesis.layer12.blur.kernel"] == (64, 1, 3, 3)
    assert shapes["synthesis.output6.weight"] == (3, 64, 1, 1)
    blur_layers = sorted(int(k.split(".")[1][5:]) for k in shapes if k.endswith("blur.kernel"))
    assert blur_layers == [2, 4, 6, 8, 10, 12]
    assert sum(k.endswith("apply_noise.noise") for k in shapes) == 14
    assert all(v.dtype == torch.float32 for v in sd.values())


def test_discriminator_256_layout_matches_genforce():
    d = StyleGANDiscriminator(DiscriminatorConfig())
    sd = d.state_dict()
    assert len(sd) == 51
    assert sum(p.numel() for p in d.parameters()) == 23_052_353
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["input0.weight"] == (64, 3, 1, 1)
    assert shapes["layer12.weight"] == (512, 513, 3, 3)
    assert shapes["layer13.weight"] == (512, 8192)
    assert shapes["layer14.weight"] == (1, 512)
    assert sorted(int(k.split(".")[0][5:]) for k in shapes if k.endswith("blur.kernel")) == [1, 3, 5, 7, 9, 11]


# ---------------------------------------------------------------- strict loading

def test_strict_load_rejects_removed_key_naming_it():
    g, sd = small_g(), small_g(1).state_dict()
    del sd["synthesis.layer3.style.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys: synthesis\.layer3\.style\.bias"):
        load_state_dict_strict(g, sd)


def test_strict_load_rejects_renamed_key_naming_both():
    g, sd = small_g(), small_g(1).state_dict()
    sd["mapping.dense9.weight"] = sd.pop("mapping.dense1.weight")
    with pytest.raises(CheckpointError) as e:
        load_state_dict_strict(g, sd)
    assert "missing keys: mapping.dense1.weight" in str(e.value)
    assert "unexpected keys: mapping.dense9.weight" in str(e.value)


def test_strict_load_rejects_reshaped_key_naming_shapes():
    g, sd = small_g(), small_g(1).state_dict()
    sd["synthesis.output3.weight"] = torch.zeros(3, 7, 1, 1)
    with pytest.raises(CheckpointError, match=r"mis-shaped keys: synthesis\.output3\.weight \(checkpoint \(3, 7, 1, 1\)"):
        load_state_dict_strict(g, sd)


def test_strict_load_leaves_model_untouched_on_error_and_loads_buffers():
    g = small_g()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    src = small_g(1).state_dict()
    bad = dict(src)
    del bad["truncation.w_avg"]
    with pytest.raises(CheckpointError):
        load_state_dict_strict(g, bad)
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items())
    load_state_dict_strict(g, src)
    # noise maps and blur kernels are buffers of the checkpoint: loaded, not regenerated
    assert torch.equal(g.synthesis.layer5.apply_noise.noise, src["synthesis.layer5.apply_noise.noise"])


def test_allowed_to_differ_keeps_model_values_and_still_rejects_others():
    g = small_g()
    src = small_g(1).state_dict()
    src["mapping.dense0.weight"] = torch.zeros(32, 40)
    keep = g.mapping.dense0.weight.clone()
    load_state_dict_strict(g, src, allowed_to_differ=["mapping.dense0.weight"])
    assert torch.equal(g.mapping.dense0.weight, keep)
    assert torch.equal(g.mapping.dense1.weight, src["mapping.dense1.weight"])
    src["mapping.dense1.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="mapping.dense1.weight"):
        load_state_dict_strict(g, src, allowed_to_differ=["mapping.dense0.weight"])


def test_checkpoint_file_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*\n.*put it here"):
        read_checkpoint(tmp_path / "nope.pth", missing_hint="put it here")
    path = tmp_path / "ck.pth"
    save_checkpoint({"generator": small_g().state_dict()}, path)
    ck = read_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"no 'discriminator' entry; it has: \['generator'\]"):
        select_entry(ck, "discriminator", path)
    # weights_only=True: a pickled arbitrary object is refused
    torch.save({"generator": small_g().state_dict(), "extra": np.random.default_rng(0)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint(tmp_path / "evil.pth")
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pth"):
        read_checkpoint(tmp_path / "corrupt.pth")


def test_missing_celeba_checkpoint_says_where_to_get_and_put_it(monkeypatch, tmp_path):
    from pipeline.profiles import load_profile
    prof = load_profile("celeba256")
    prof["generator_checkpoint"] = str(tmp_path / "stylegan_model.pth")
    with pytest.raises(CheckpointError) as e:
        build_generator(prof)
    msg = str(e.value)
    assert "stylegan_celeba_partial256" in msg and "checkpoints/celeba256/stylegan_model.pth" in msg


def test_lod_other_than_zero_is_rejected(tmp_path):
    from pipeline.profiles import Profile
    g = small_g()
    sd = g.state_dict()
    sd["synthesis.lod"] = torch.tensor(1.0)
    save_checkpoint({"generator": sd}, tmp_path / "g.pth")
    prof = Profile({"name": "t", "generator": SMALL.to_dict(), "generator_checkpoint": str(tmp_path / "g.pth")})
    with pytest.raises(CheckpointError, match="lod 1.0"):
        build_generator(prof)


# ---------------------------------------------------------------- dtype, autograd, determinism

def test_float64_inputs_are_cast_to_float32():
    g = small_g()
    z = torch.randn(2, 32, dtype=torch.float64)
    with torch.inference_mode():
        out = g(z)
        ref = g(z.float())
    assert out["image"].dtype == torch.float32 and out["z"].dtype == torch.float32
    assert torch.equal(out["image"], ref["image"])
    img = generate(g, z.numpy())                   # numpy float64 too
    assert img.dtype == torch.float32


def test_inference_path_builds_no_autograd_graph():
    g = small_g().requires_grad_(True)
    img = generate(g, torch.randn(2, 32))
    assert img.is_inference() and not img.requires_grad and img.grad_fn is None


def test_eval_forward_is_deterministic_and_batch_independent():
    g = small_g()
    z = torch.randn(6, 32)
    with torch.inference_mode():
        a = g(z)["image"]
        b = g(z)["image"]
        singles = torch.cat([g(z[i:i + 1])["image"] for i in range(6)])
    assert torch.equal(a, b)
    assert (a - singles).abs().max() <= 1e-4 * a.abs().max()


def test_eval_mode_does_not_touch_w_avg_and_train_mode_updates_it():
    g = small_g()
    z = torch.randn(4, 32)
    with torch.no_grad():
        g(z)
        assert torch.count_nonzero(g.truncation.w_avg) == 0
        g.train()
        out = g(z, style_mixing_prob=0.0)
    assert torch.allclose(g.truncation.w_avg, 0.005 * out["w"].mean(0), atol=1e-7)


def test_training_style_mixing_is_seeded_and_replaces_layers_from_cutoff():
    g = small_g().train()
    z = torch.randn(3, 32)
    with torch.no_grad():
        a = g(z, style_mixing_prob=1.0, generator=torch.Generator().manual_seed(5))
        b = g(z, style_mixing_prob=1.0, generator=torch.Generator().manual_seed(5))
        c = g(z, style_mixing_prob=0.0)
    assert torch.equal(a["image"], b["image"])
    wp, w = a["wp"], a["w"]
    same = torch.isclose(wp, w.unsqueeze(1).expand_as(wp)).all(dim=(0, 2))
    cutoff = int((~same).nonzero()[0])
    assert 1 <= cutoff < g.num_layers and same[:cutoff].all() and not same[cutoff:].any()
    assert not torch.equal(a["image"], c["image"])


def test_mix_styles_per_sample_cutoff():
    g = small_g()
    wp1, wp2 = torch.zeros(3, g.num_layers, 32), torch.ones(3, g.num_layers, 32)
    mixed = g.mix_styles(wp1, wp2, torch.tensor([-1, 2, 5]))
    assert mixed[0].sum() == 0
    assert mixed[1, :2].sum() == 0 and (mixed[1, 2:] == 1).all()
    assert mixed[2, :5].sum() == 0 and (mixed[2, 5:] == 1).all()


def test_truncation_moves_only_first_layers_towards_w_avg():
    g = small_g()
    g.truncation.w_avg.normal_()
    w = torch.randn(2, 32)
    wp = g.truncation(w, trunc_psi=0.7, trunc_layers=3)
    avg = g.truncation.w_avg
    assert torch.allclose(wp[:, :3], (avg + 0.7 * (w - avg)).unsqueeze(1).expand(-1, 3, -1), atol=1e-6)
    assert torch.allclose(wp[:, 3:], w.unsqueeze(1).expand(-1, g.num_layers - 3, -1), atol=1e-6)
    assert torch.equal(g.truncation(w, trunc_psi=1.0, trunc_layers=8), g.truncation(w))


def test_randomize_noise_is_per_sample_and_seeded():
    g = small_g()
    z = torch.randn(1, 32).repeat(2, 1)
    a = generate(g, z, randomize_noise=True, noise_seed=1)
    b = generate(g, z, randomize_noise=True, noise_seed=1)
    fixed = generate(g, z)
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])          # fresh map per sample
    assert torch.equal(fixed[0], fixed[1])      # stored map shared by the batch
    assert not torch.equal(a[0], fixed[0])


def test_synthesis_can_be_entered_from_w():
    g = small_g()
    z = torch.randn(2, 32)
    with torch.inference_mode():
        out = g(z)
        img = g.synthesize_from_w(out["w"])
        img_wp = g.synthesize_from_w(out["wp"])
    assert torch.equal(out["image"], img) and torch.equal(img, img_wp)


# ---------------------------------------------------------------- block numerics (facts of the reference design)

def test_fused_upsampling_equals_nearest_then_flipped_conv():
    torch.manual_seed(0)
    fused = SynthesisLayer("up_fused", 8, 4, 16, 8)
    x = torch.randn(2, 8, 8, 8)
    w = fused.weight * fused.scale
    y_fused = F.conv_transpose2d(x, fused._fused_up_weight(), stride=2, padding=1)
    y_ref = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w.flip(2, 3), padding=1)
    assert (y_fused - y_ref).abs().max() < 1e-5
    y_unflipped = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w, padding=1)
    assert (y_fused - y_unflipped).abs().max() > 1e-2


def test_fused_downsampling_equals_conv_then_average_pool():
    from stylegan.layers import DiscriminatorConv
    torch.manual_seed(0)
    fused = DiscriminatorConv(4, 6, down="fused")
    pooled = DiscriminatorConv(4, 6, down="pool")
    pooled.load_state_dict(fused.state_dict())
    x = torch.randn(2, 4, 16, 16)
    assert (fused(x) - pooled(x)).abs().max() < 1e-5


def test_minibatch_stddev_groups_are_strided_and_batch1_is_constant():
    x = torch.randn(8, 3, 4, 4)
    y = minibatch_stddev(x, 4)
    assert y.shape == (8, 4, 4, 4)
    # group of sample i = i mod 2: members {0, 2, 4, 6} and {1, 3, 5, 7}
    g0 = x[[0, 2, 4, 6]]
    expect = torch.sqrt(g0.var(dim=0, unbiased=False) + 1e-8).mean()
    assert torch.allclose(y[0, 3], expect.expand(4, 4), atol=1e-6)
    assert torch.allclose(y[6, 3], expect.expand(4, 4), atol=1e-6)
    one = minibatch_stddev(x[:1], 4)
    assert torch.allclose(one[0, 3], torch.full((4, 4), 1e-4))
    with pytest.raises(ValueError, match="not divisible"):
        minibatch_stddev(x[:6], 4)


def test_wscale_factors():
    g = StyleGANGenerator(GeneratorConfig())
    assert math.isclose(g.mapping.dense0.scale, math.sqrt(2) / math.sqrt(512) * 0.01)
    assert math.isclose(g.synthesis.layer1.scale, math.sqrt(2) / math.sqrt(9 * 512))
    assert math.isclose(g.synthesis.layer1.style.scale, 1 / math.sqrt(512))
    assert math.isclose(g.synthesis.output6.scale, 1 / 8)
    d = StyleGANDiscriminator(DiscriminatorConfig())
    assert math.isclose(d.layer14.scale, 1 / math.sqrt(512))
    # stored mapping weights are N(0, 1) / lr_mul at init
    assert 80 < g.mapping.dense3.weight.std() < 120


def test_postprocess_rounds_half_up_and_clips():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 2.0, -0.00392156862745098]).view(1, 1, 2, 3).repeat(1, 3, 1, 1)
    out = postprocess(x)
    assert out.dtype == np.uint8 and out.shape == (1, 2, 3, 3)
    assert out[0, :, :, 0].ravel().tolist() == [0, 0, 128, 255, 255, 127]
