"""Inference paths of the StyleGAN core (plain / exact / relaxed / compiled) and batch-size determinism."""
from pathlib import Path

import numpy as np
import pytest
import torch

from stylegan import GeneratorConfig, StyleGANGenerator
from stylegan.generator import PLAIN, InferencePlan
from stylegan.sampling import DEFAULT_PLAN, DETERMINISTIC, generate, generate_uint8, inference_signature, noise_maps

EXACT, RELAXED = InferencePlan(path="exact"), InferencePlan(path="relaxed")


def make_g(fused, resolution=32, seed=0):
    """Small generator with non-zero noise strengths and biases (zero at init would hide bugs)."""
    cfg = GeneratorConfig(resolution=resolution, z_dim=32, w_dim=32, mapping_layers=2, mapping_fmaps=32,
                          fmaps_base=256, fmaps_max=32, fused_scale=fused)
    torch.manual_seed(seed)
    g = StyleGANGenerator(cfg)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith(("apply_noise.weight", ".bias")):
                p.normal_(0.0, 0.5)
    return g.eval().requires_grad_(False)


def synth(g, wp, plan, **kw):
    with torch.inference_mode():
        return g.synthesis(wp, plan=plan, **kw)["image"]


def wp_of(g, n, seed=1):
    with torch.inference_mode():
        return g.truncation(g.mapping(torch.randn(n, 32, generator=torch.Generator().manual_seed(seed)))["w"])


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_exact_path_is_bit_identical_to_plain_and_relaxed_is_close(fused, batch):
    g = make_g(fused)
    wp = wp_of(g, batch)
    plain = synth(g, wp, PLAIN)
    for _ in range(2):                                   # second call: from the cache
        assert torch.equal(synth(g, wp, EXACT), plain)
    relaxed = synth(g, wp, RELAXED)
    assert relaxed.is_contiguous() and relaxed.shape == plain.shape
    assert (relaxed - plain).abs().max() <= 1e-4 * max(1.0, float(plain.abs().max()))
    assert not torch.equal(relaxed, plain)               # it really is another computation
    # explicit per-sample noise maps: the same on every path
    noise = [torch.randn(batch, 1, r, r) for r in g.synthesis.noise_resolutions()]
    plain_n = synth(g, wp, PLAIN, noise=noise)
    assert torch.equal(synth(g, wp, EXACT, noise=noise), plain_n)
    assert (synth(g, wp, RELAXED, noise=noise) - plain_n).abs().max() <= 1e-4 * max(1.0, float(plain_n.abs().max()))
    assert not torch.equal(plain_n, plain)


def test_relaxed_path_splits_large_layers_per_sample_without_changing_results(monkeypatch):
    import stylegan.generator as gen
    monkeypatch.setattr(gen, "SPLIT_ELEMENTS", 4 * 32 * 32)   # here: the 32 and 64 px layers run per sample
    g = make_g("auto", resolution=64)
    assert 0 < g.synthesis._split_layer() < g.num_layers
    wp = wp_of(g, 3)
    batched = synth(g, wp, RELAXED)
    singles = torch.cat([synth(g, wp[i:i + 1], RELAXED) for i in range(3)])
    plain = synth(g, wp, PLAIN)
    assert (batched - plain).abs().max() <= 1e-4 * max(1.0, float(plain.abs().max()))
    assert (batched - singles).abs().max() <= 1e-5 * max(1.0, float(plain.abs().max()))
    out_b = g.synthesis(wp, plan=RELAXED)
    out_p = g.synthesis(wp)
    assert set(out_b) == set(out_p)
    for k in out_p:                                     # styles are reassembled in batch order
        assert (out_b[k] - out_p[k]).abs().max() <= 1e-4 * max(1.0, float(out_p[k].abs().max()))


def test_cache_follows_weight_changes_and_train_mode():
    g = make_g(True)
    wp = wp_of(g, 2)
    synth(g, wp, EXACT)                                  # fill the cache
    other = make_g(True, seed=5)
    g.load_state_dict(other.state_dict())                # in-place copy: version counters move
    assert torch.equal(synth(g, wp, EXACT), synth(other, wp, PLAIN))
    with torch.no_grad():
        g.synthesis.layer3.weight.mul_(1.5)
        g.synthesis.layer2.apply_noise.noise.add_(1.0)
        g.synthesis.layer5.style.weight.mul_(0.5)
    assert torch.equal(synth(g, wp, EXACT), synth(g, wp, PLAIN))
    assert (synth(g, wp, RELAXED) - synth(g, wp, PLAIN)).abs().max() <= 1e-4 * max(1.0, float(synth(g, wp, PLAIN).abs().max()))
    g.train()
    assert all(not m._cache._store for m in g.synthesis.modules() if hasattr(m, "_cache"))
    g.eval()
    g.synthesis.layer1.weight = torch.nn.Parameter(torch.randn_like(g.synthesis.layer1.weight))  # new storage
    assert torch.equal(synth(g, wp, EXACT), synth(g, wp, PLAIN))


def test_train_mode_runs_the_plain_path_with_autograd():
    g = make_g(False).train().requires_grad_(True)
    wp = wp_of(g, 2).clone()
    img = g.synthesis(wp, plan=RELAXED)["image"]
    img.sum().backward()
    assert g.synthesis.layer3.weight.grad is not None
    assert torch.equal(img.detach(), g.synthesis(wp)["image"].detach())


def test_with_autograd_enabled_the_plain_path_runs():
    """Latent optimisation (frozen G, grad on wp): the in-place fast paths step aside."""
    g = make_g(False)
    wp = wp_of(g, 1).clone().requires_grad_(True)
    g.synthesis(wp.detach(), plan=EXACT)                 # cache filled outside autograd
    g.synthesis(wp, plan=RELAXED)["image"].square().mean().backward()
    grad_exact = wp.grad.clone()
    wp.grad = None
    g.synthesis(wp)["image"].square().mean().backward()
    assert torch.equal(grad_exact, wp.grad)


@pytest.mark.parametrize("plan", [DETERMINISTIC, RELAXED, InferencePlan(path="relaxed", micro_batch=4)],
                         ids=["exact8", "relaxed8", "relaxed4"])
@pytest.mark.parametrize("randomize", [False, True])
def test_images_do_not_depend_on_batch_size(plan, randomize):
    g = make_g("auto", resolution=64)
    n = 11
    z = np.random.default_rng(0).standard_normal((n, 32), dtype=np.float32)
    ids = np.arange(100, 100 + n)
    kw = dict(plan=plan, randomize_noise=randomize, noise_seed=3)

    def run(bs):
        return np.concatenate([generate_uint8(g, z[a:a + bs], noise_ids=ids[a:a + bs], **kw)
                               for a in range(0, n, bs)])
    ref = run(8)
    for bs in (1, 5, 11):
        assert np.array_equal(run(bs), ref), f"batch {bs} differs from batch 8"
    # float images too, not only after rounding
    f1 = torch.cat([generate(g, z[i:i + 1], noise_ids=ids[i:i + 1], **kw) for i in range(3)])
    assert torch.equal(f1, generate(g, z[:3], noise_ids=ids[:3], **kw))
    if randomize:                                       # the noise follows the image id, not the position
        moved = generate_uint8(g, z[[1]], noise_ids=[ids[1]], **kw)
        assert np.array_equal(moved[0], ref[1])
        other = generate_uint8(g, z[[1]], noise_ids=[999], **kw)
        assert not np.array_equal(other[0], ref[1])


def test_exact_micro_batches_equal_plain_calls_of_the_same_size():
    """Stage 1 rendered chunks of 8 with the plain path: DETERMINISTIC gives the same bytes, and
    the default plan gives the plain path's bytes at any request size."""
    g = make_g("auto", resolution=32)
    z = torch.randn(16, 32, generator=torch.Generator().manual_seed(2))
    chunks = torch.cat([generate(g, z[a:a + 8], plan=PLAIN) for a in (0, 8)])
    assert torch.equal(generate(g, z, plan=DETERMINISTIC), chunks)
    assert torch.equal(generate(g, z, plan=EXACT), chunks)
    for n in (1, 3, 16):
        assert torch.equal(generate(g, z[:n]), generate(g, z[:n], plan=PLAIN))
    calls = []
    hook = g.synthesis.register_forward_hook(lambda m, i, o: calls.append(o["image"].shape[0]))
    generate(g, z[:3])
    generate(g, z[:3], plan=DETERMINISTIC)
    hook.remove()
    assert calls == [3, 8]                             # default: no padding; deterministic: padded to 8


def test_noise_maps_are_per_image_streams():
    g = make_g(False)
    a = noise_maps(g, [7, 8], noise_seed=1, rows=3)
    b = noise_maps(g, [8], noise_seed=1)
    assert len(a) == g.num_layers and a[-1].shape == (3, 1, 32, 32)
    for ma, mb in zip(a, b):
        assert torch.equal(ma[1], mb[0]) and not torch.equal(ma[0], ma[1]) and ma[2].abs().sum() == 0
    assert not torch.equal(noise_maps(g, [8], noise_seed=2)[0], b[0])


def test_compile_failure_falls_back_to_the_eager_relaxed_path(monkeypatch):
    g = make_g(False)
    wp = wp_of(g, 2)

    def broken(fn, **kw):
        def run(*a):
            raise RuntimeError("no compiler here")
        return run
    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(UserWarning, match="torch.compile failed"):
        out = synth(g, wp, InferencePlan(path="relaxed", compile=True))
    assert torch.equal(out, synth(g, wp, RELAXED))
    assert torch.equal(synth(g, wp, InferencePlan(path="relaxed", compile=True)), out)   # no second warning


def test_plan_validation_and_signature():
    with pytest.raises(ValueError, match="inference path"):
        InferencePlan(path="fast")
    with pytest.raises(ValueError, match="compile=True needs"):
        InferencePlan(path="exact", compile=True)
    with pytest.raises(ValueError, match="micro_batch"):
        InferencePlan(micro_batch=-1)
    sig = inference_signature(DETERMINISTIC)
    assert sig["path"] == "exact" and sig["micro_batch"] == 8 and sig["compile"] is False
    assert DEFAULT_PLAN.path == "exact" and DEFAULT_PLAN.micro_batch == 0
    assert sig["torch"] == torch.__version__ and sig["threads"] == torch.get_num_threads()
    assert inference_signature(RELAXED)["path"] == "relaxed"


@pytest.mark.parametrize("flip", [False, True])
def test_relaxed_conv_kernels_match_the_direct_convolutions(flip):
    import torch.nn.functional as F

    from stylegan.kernels import _UP_G, _WINO_G, _transform_weight, conv3x3_winograd, upconv_relaxed
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 12, 6, 8, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(5, 12, 3, 3, generator=g)
    w = w.flip(2, 3) if flip else w
    ref_up = F.conv2d(F.interpolate(x.contiguous(), scale_factor=2, mode="nearest"), w, padding=1)
    up = upconv_relaxed(x, _transform_weight(w, _UP_G))
    assert up.shape == ref_up.shape and up.is_contiguous(memory_format=torch.channels_last)
    assert (up - ref_up).abs().max() <= 1e-5 * ref_up.abs().max()
    x = torch.randn(2, 12, 8, 12, generator=g).contiguous(memory_format=torch.channels_last)
    w2 = torch.randn(7, 12, 3, 3, generator=g)
    ref = F.conv2d(x.double(), w2.double(), padding=1)
    wino = conv3x3_winograd(x, _transform_weight(w2, _WINO_G))
    assert wino.shape == ref.shape and wino.is_contiguous(memory_format=torch.channels_last)
    assert (wino - ref).abs().max() <= 2e-5 * ref.abs().max()


def test_winograd_strips_give_the_same_result(monkeypatch):
    """The tile-row strips (STRIP_VALUES) only change how the work is cut (and the GEMM blocking)."""
    import stylegan.kernels as k
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 16, 12, generator=g).contiguous(memory_format=torch.channels_last)
    u = k._transform_weight(torch.randn(6, 8, 3, 3, generator=g), k._WINO_G)
    whole = k.conv3x3_winograd(x, u)
    monkeypatch.setattr(k, "STRIP_VALUES", 1)                       # one tile row per strip
    assert (k.conv3x3_winograd(x, u) - whole).abs().max() <= 1e-5 * whole.abs().max()   # GEMM blocking only


def test_relaxed_path_with_every_kernel_stays_close_to_plain(monkeypatch):
    """Thresholds lowered so that the small test generator runs Winograd and the 9-product upconv
    in every layer that can take them: still within the stated tolerance of the plain path."""
    import stylegan.layers as layers
    monkeypatch.setattr(layers, "WINOGRAD_MIN_CHANNELS", 1)
    monkeypatch.setattr(layers, "UPCONV_MIN_CHANNELS", 1)
    for fused in (False, "auto"):
        g = make_g(fused, resolution=64)
        wp = wp_of(g, 2)
        plain = synth(g, wp, PLAIN)
        relaxed = synth(g, wp, RELAXED)
        assert (relaxed - plain).abs().max() <= 1e-4 * max(1.0, float(plain.abs().max()))


def test_default_plan_is_exact_and_a_model_can_take_the_fast_path():
    """plan=None: the model's default plan, the exact path (bit-identical to plain) unless
    set_inference_plan chose another; callers that pass no plan follow it."""
    from stylegan.generator import DEFAULT_PLAN, FAST
    from stylegan.sampling import set_inference_plan
    g = make_g("auto", resolution=32)
    wp = wp_of(g, 3)
    plain = synth(g, wp, PLAIN)
    assert g.synthesis.default_plan == DEFAULT_PLAN and DEFAULT_PLAN.path == "exact"
    assert torch.equal(synth(g, wp, None), plain)
    assert "default_plan" not in str(list(g.state_dict()))
    calls = []
    hook = g.synthesis.register_forward_hook(lambda m, i, o: calls.append(o["image"].shape[0]))
    set_inference_plan(g, FAST)
    fast = synth(g, wp, None)
    assert not torch.equal(fast, plain) and (fast - plain).abs().max() <= 1e-4 * max(1.0, float(plain.abs().max()))
    assert torch.equal(fast, synth(g, wp, RELAXED))
    z = torch.randn(3, 32, generator=torch.Generator().manual_seed(4))
    calls.clear()
    via_sampler = generate(g, z)                         # FAST: padded micro-batches of 8
    assert calls == [8] and torch.equal(via_sampler, generate(g, z, plan=FAST))
    set_inference_plan(g, None)
    assert g.synthesis.default_plan == DEFAULT_PLAN and torch.equal(synth(g, wp, None), plain)
    hook.remove()
    with pytest.raises(TypeError):
        set_inference_plan(g, "relaxed")


def test_conditional_generators_follow_the_default_plan():
    """The fine-tuned variants build on the same synthesis network: synthesize() takes the plan."""
    from stylegan.generator import FAST
    from stylegan.sampling import set_inference_plan
    from stylegan_modified.conditional import synthesize
    from stylegan_modified.v9 import build_v9_generator
    cfg = GeneratorConfig(resolution=32, z_dim=32, w_dim=32, mapping_layers=2, mapping_fmaps=32,
                          fmaps_base=256, fmaps_max=32)
    g = build_v9_generator(cfg, seed=0).eval().requires_grad_(False)
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    label = torch.zeros(2, g.spec.label_dim)
    before = synthesize(g, z, label)
    set_inference_plan(g, FAST)
    after = synthesize(g, z, label)
    assert not torch.equal(after, before)                # the relaxed path ran
    assert (after - before).abs().max() <= 1e-4 * max(1.0, float(before.abs().max()))


def test_importing_the_core_does_not_import_the_compiler():
    """torch's compiler (about 1.3 s per process) is imported only when a compiled plan runs: the
    weight cache is excluded from tracing then (``WeightCache.exclude_from_compile``), not at import."""
    import subprocess
    import sys
    code = "import sys, stylegan.generator, stylegan.sampling; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parent.parent))
    assert out.stdout.strip() == "False"
