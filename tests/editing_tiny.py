"""A tiny v9 generator, an image-statistics scorer and fixed parsing regions for editing tests.

The scorer reads simple statistics of the image as the eight merged-CNN properties (eyes = mean
red of the top half, mouth = mean green of the bottom half, pose = blue left minus right; the group properties are scrambled
statistics so that the 16 groups are balanced),
so every method has a real, smooth property to find; ``regions`` gives each controlled
property the pixels its statistic reads.
"""
from __future__ import annotations

import numpy as np
import torch

from stylegan.generator import GeneratorConfig
from stylegan_modified.v9 import build_v9_generator

TINY = GeneratorConfig(resolution=16, z_dim=16, w_dim=16, mapping_layers=3, mapping_fmaps=16, fmaps_base=64,
                       fmaps_max=16)


def tiny_generator(seed: int = 0):
    g = build_v9_generator(TINY, seed=seed, init_std=0.15).eval()
    g.requires_grad_(False)
    return g


def scorer(images: torch.Tensor) -> dict:
    x = images.detach().double()
    h = x.shape[-1] // 2
    out = {"eyes": x[:, 0, :h].mean(dim=(1, 2)), "mouth": x[:, 1, h:].mean(dim=(1, 2)),
           "pose": x[:, 2, :, :h].mean(dim=(1, 2)) - x[:, 2, :, h:].mean(dim=(1, 2)),
           "background_std": x.std(dim=(1, 2, 3))}
    # the group properties: deterministic but scrambled statistics, so the 16 groups are balanced
    for i, p in enumerate(("hair_color", "hair_length", "background_mean", "hairstyle")):
        out[p] = torch.sin(x[:, i % 3, i, 2 * i + 1] * 1e4)
    return {k: v.float().numpy() for k, v in out.items()}


def regions(images: torch.Tensor) -> dict:
    n, _, r, _ = images.shape
    h = r // 2
    masks = {p: np.zeros((n, r, r), bool) for p in ("eyes", "mouth", "pose")}
    masks["eyes"][:, :h] = True
    masks["mouth"][:, h:] = True
    masks["pose"][:] = True
    return masks
