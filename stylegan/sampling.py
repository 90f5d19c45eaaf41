"""Building the profile's generator, seeded latents, batched inference.

Determinism: with ``plan=DETERMINISTIC`` (or any plan with ``micro_batch > 0``)
:func:`generate` renders in fixed micro-batches (the last one padded with zero rows)
and, with ``randomize_noise``, draws each image's noise maps from its own stream
``(noise_seed, image id)`` (pass ``noise_ids``). So an image depends on its latent, its
id, the model and the settings — not on how many images are requested together. The
default plan (exact path, one call per request) keeps the old bytes and costs. What else it depends on (torch version, CPU kernels, thread count, path) is
:func:`inference_signature`; a stage records it and checks it on resume.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from pipeline.checkpoint import CheckpointError, load_state_dict_strict, read_checkpoint, select_entry
from .discriminator import DiscriminatorConfig, StyleGANDiscriminator
from .generator import DEFAULT_PLAN, FAST, PLAIN, GeneratorConfig, InferencePlan, StyleGANGenerator, postprocess

# Batch-size independent sampling (what a stage that promises "image = f(seed, n)" passes):
# the exact path (bit-identical to plain) in fixed micro-batches of 8, the last one padded.
# FAST is its relaxed twin (within 1e-4 of plain).
DETERMINISTIC = InferencePlan(path="exact", micro_batch=8)
# DEFAULT_PLAN (the exact path, one call per request): every caller gets the same bytes as the
# plain path, faster, and a request of 1 image costs 1 image, not 8.
__all__ = ["DEFAULT_PLAN", "DETERMINISTIC", "FAST", "PLAIN", "InferencePlan", "build_discriminator", "build_generator",
           "generate", "generate_uint8", "inference_signature", "latent_z", "inference_plan", "mixing_plan",
           "noise_maps", "set_inference_plan", "stage_plan"]


def build_generator(profile) -> StyleGANGenerator:
    """The profile's pre-trained generator in eval mode with gradients off.

    A profile either names a checkpoint (loaded strictly, ``weights_only=True``)
    or, while no trained weights exist, a ``random_init_seed`` for a fixed
    random initialisation.
    """
    cfg = GeneratorConfig.from_dict(profile["generator"])
    ckpt_rel = profile.get("generator_checkpoint")
    if ckpt_rel:
        with torch.random.fork_rng():
            g = StyleGANGenerator(cfg)
        path = profile.path(ckpt_rel)
        ckpt = read_checkpoint(path, missing_hint=profile.get("checkpoint_hint", ""))
        key = profile.get("generator_checkpoint_key", "generator")
        load_state_dict_strict(g, select_entry(ckpt, key, path), what=f"generator '{key}' of {path}")
    else:
        seed = profile.get("random_init_seed")
        if seed is None:
            raise CheckpointError(f"profile {profile.name!r} names neither a generator checkpoint nor a random_init_seed")
        with torch.random.fork_rng():
            torch.manual_seed(int(seed))
            g = StyleGANGenerator(cfg)
    if float(g.synthesis.lod) != 0.0:
        raise CheckpointError(f"generator of profile {profile.name!r} has lod {float(g.synthesis.lod)}, expected 0")
    return g.eval().requires_grad_(False)


def set_inference_plan(g, plan: InferencePlan | None) -> None:
    """Make ``plan`` what ``g.synthesis(..., plan=None)`` runs (any generator with a ``synthesis``
    network: the StyleGAN core, the conditional and v9 variants), so that callers that do not
    pass a plan (generation tests, VectorFind sampling, the editor) take it; None: the default
    (exact path). Train mode and autograd still run the plain computation."""
    if plan is not None and not isinstance(plan, InferencePlan):
        raise TypeError(f"plan must be an InferencePlan or None, got {type(plan).__name__}")
    g.synthesis.default_plan = DEFAULT_PLAN if plan is None else plan


@contextmanager
def inference_plan(g, plan: InferencePlan | None):
    """:func:`set_inference_plan` for a ``with`` block: ``g``'s previous default plan comes back after it."""
    before = g.synthesis.default_plan
    set_inference_plan(g, plan)
    try:
        yield g
    finally:
        set_inference_plan(g, before)


def stage_plan(path: str) -> InferencePlan:
    """A stage's ``inference_path`` setting -> its batch-size independent plan: ``"exact"``
    (:data:`DETERMINISTIC`, byte-identical to the plain path) or ``"relaxed"`` (:data:`FAST`)."""
    plans = {"exact": DETERMINISTIC, "relaxed": FAST}
    if path not in plans:
        raise ValueError(f"inference path must be one of {', '.join(plans)}, got {path!r}")
    return plans[path]


def build_discriminator(profile, state_dict: dict | None = None) -> StyleGANDiscriminator:
    cfg = DiscriminatorConfig.from_dict(profile["discriminator"])
    with torch.random.fork_rng():
        d = StyleGANDiscriminator(cfg)
    if state_dict is not None:
        load_state_dict_strict(d, state_dict, what="discriminator")
    return d


def latent_z(indices, z_dim: int, seed: int) -> np.ndarray:
    """z for each image number: row n comes from its own stream (seed, n), so a
    latent does not depend on how many images are drawn, on batching or on sharding."""
    out = np.empty((len(indices), z_dim), dtype=np.float32)
    for row, n in enumerate(indices):
        out[row] = np.random.default_rng([int(seed), int(n)]).standard_normal(z_dim, dtype=np.float32)
    return out


def mixing_plan(indices, z_dim: int, seed: int, prob: float, num_layers: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-image style mixing: second latent z2 and cutoff layer (-1 = no mixing)."""
    z2 = np.empty((len(indices), z_dim), dtype=np.float32)
    cutoff = np.full(len(indices), -1, dtype=np.int64)
    for row, n in enumerate(indices):
        rng = np.random.default_rng([int(seed), int(n), 1])
        z2[row] = rng.standard_normal(z_dim, dtype=np.float32)
        if rng.random() < prob:
            cutoff[row] = int(rng.integers(1, num_layers))
    return z2, cutoff


def inference_signature(plan: InferencePlan) -> dict:
    """What an image depends on besides (seed, n, model, settings): record it with a run's
    outputs and compare on resume (the same values give byte-identical images; with
    ``micro_batch`` 0 the request size matters too)."""
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkldnn": bool(torch.backends.mkldnn.is_available()), **plan.to_dict()}


def _stream_seed(noise_seed: int, image_id: int) -> int:
    return int(np.random.SeedSequence([int(noise_seed), int(image_id), 2]).generate_state(1, np.uint64)[0])


def noise_maps(g: StyleGANGenerator, image_ids, noise_seed: int, rows: int | None = None) -> list[torch.Tensor]:
    """One [rows, 1, R, R] map per synthesis layer; row k is drawn from image ``image_ids[k]``'s
    own stream (noise_seed, id), layer after layer; rows beyond the ids (padding) are zero."""
    res = g.synthesis.noise_resolutions()
    ids = [int(i) for i in image_ids]
    rows = len(ids) if rows is None else rows
    dev = g.truncation.w_avg.device
    maps = [torch.zeros(rows, 1, r, r, device=dev) for r in res]
    for k, n in enumerate(ids):
        gen = torch.Generator().manual_seed(_stream_seed(noise_seed, n))
        for m, r in zip(maps, res):
            m[k] = torch.randn(1, r, r, generator=gen).to(dev)
    return maps


def _pad_rows(t: torch.Tensor, rows: int, fill=0) -> torch.Tensor:
    if t.shape[0] == rows:
        return t
    pad = torch.full((rows - t.shape[0], *t.shape[1:]), fill, dtype=t.dtype, device=t.device)
    return torch.cat([t, pad])


def _render(g, z, z2, cutoff, trunc_psi, trunc_layers, randomize_noise, gen, noise, plan) -> torch.Tensor:
    wp = g.truncation(g.mapping(z)["w"])
    if z2 is not None and cutoff is not None:
        wp2 = g.truncation(g.mapping(z2)["w"])
        wp = g.mix_styles(wp, wp2, cutoff)
    wp = g.truncation(wp, trunc_psi, trunc_layers)
    return g.synthesis(wp, randomize_noise, gen, plan=plan, noise=noise)["image"]


@torch.inference_mode()
def generate(g: StyleGANGenerator, z: np.ndarray | torch.Tensor, *, trunc_psi: float = 1.0, trunc_layers: int = 0,
             z2=None, cutoff=None, randomize_noise: bool = False, noise_seed: int | None = None,
             noise_ids=None, plan: InferencePlan | None = None) -> torch.Tensor:
    """Images in [-1, 1] for a batch of z (eval semantics; optional explicit style mixing).

    ``plan`` (default: the model's ``synthesis.default_plan``, :data:`DEFAULT_PLAN` unless
    :func:`set_inference_plan` changed it; :data:`DETERMINISTIC` / :data:`FAST` for batch-size
    independent images): inference path and micro-batch. With
    ``randomize_noise`` the maps of row k come from the stream (``noise_seed``,
    ``noise_ids[k]``) (ids default to the row numbers 0..B-1: pass the image numbers so
    that an image's noise does not depend on where it sits in the request). With
    ``plan.micro_batch == 0`` the whole request is one call and randomised noise is
    drawn in batch order from one generator seeded with ``noise_seed`` (the old behaviour).
    """
    plan = g.synthesis.default_plan if plan is None else plan
    dev = g.truncation.w_avg.device
    z = torch.as_tensor(z).to(torch.float32).to(dev)
    if z2 is not None:
        z2 = torch.as_tensor(z2).to(torch.float32).to(dev)
    if cutoff is not None:
        cutoff = torch.as_tensor(cutoff).to(dev)
    seed = int(noise_seed or 0)
    if plan.micro_batch == 0:
        gen = torch.Generator().manual_seed(seed) if randomize_noise and noise_ids is None else None
        noise = noise_maps(g, noise_ids, seed) if randomize_noise and noise_ids is not None else None
        return _render(g, z, z2, cutoff, trunc_psi, trunc_layers, randomize_noise, gen, noise, plan)
    n, mb = z.shape[0], plan.micro_batch
    ids = list(range(n)) if noise_ids is None else [int(i) for i in noise_ids]
    if len(ids) != n:
        raise ValueError(f"noise_ids has {len(ids)} entries for {n} latents")
    out = []
    for a in range(0, n, mb):
        b = min(a + mb, n)
        zc = _pad_rows(z[a:b], mb)
        z2c = None if z2 is None else _pad_rows(z2[a:b], mb)
        cc = None if cutoff is None else _pad_rows(cutoff.reshape(-1)[a:b], mb, fill=-1)
        noise = noise_maps(g, ids[a:b], seed, rows=mb) if randomize_noise else None
        out.append(_render(g, zc, z2c, cc, trunc_psi, trunc_layers, False, None, noise, plan)[:b - a])
    if not out:
        r = g.cfg.resolution
        return torch.zeros(0, g.cfg.image_channels, r, r, device=dev)
    return torch.cat(out)


def generate_uint8(g: StyleGANGenerator, z, **kw) -> np.ndarray:
    return postprocess(generate(g, z, **kw))
