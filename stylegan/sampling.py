"""Building the profile's generator, seeded latents, batched inference."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.checkpoint import CheckpointError, load_state_dict_strict, read_checkpoint, select_entry
from .discriminator import DiscriminatorConfig, StyleGANDiscriminator
from .generator import GeneratorConfig, StyleGANGenerator, postprocess


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


@torch.inference_mode()
def generate(g: StyleGANGenerator, z: np.ndarray | torch.Tensor, *, trunc_psi: float = 1.0, trunc_layers: int = 0,
             z2=None, cutoff=None, randomize_noise: bool = False, noise_seed: int | None = None) -> torch.Tensor:
    """Images in [-1, 1] for a batch of z (eval semantics; optional explicit style mixing)."""
    z = torch.as_tensor(z).to(torch.float32)
    wp = g.truncation(g.mapping(z)["w"])
    if z2 is not None and cutoff is not None:
        wp2 = g.truncation(g.mapping(torch.as_tensor(z2).to(torch.float32))["w"])
        wp = g.mix_styles(wp, wp2, torch.as_tensor(cutoff))
    wp = g.truncation(wp, trunc_psi, trunc_layers)
    gen = None
    if randomize_noise:
        gen = torch.Generator().manual_seed(int(noise_seed or 0))
    return g.synthesis(wp, randomize_noise, gen)["image"]


def generate_uint8(g: StyleGANGenerator, z, **kw) -> np.ndarray:
    return postprocess(generate(g, z, **kw))
