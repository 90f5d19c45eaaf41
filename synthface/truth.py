"""The one place that builds the world's truth for a list of images.

``world(z_dim, seed)`` is the (cached) world map of a profile; ``truth_of(z, ...)`` the truth table
of latents; ``truth_for_images(latents_csv, img_nos, ...)`` the truth of stage-1 images by number,
read through the checked latents reader.
"""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import pandas as pd

from pipeline.latents import read_latents

from .world import WorldMap


@lru_cache(maxsize=8)
def world(z_dim: int, seed: int) -> WorldMap:
    return WorldMap(z_dim=int(z_dim), seed=int(seed))


def truth_of(z: np.ndarray, world_seed: int) -> pd.DataFrame:
    """Truth table (one row per z, columns of ``WorldMap.truth``)."""
    z = np.asarray(z, dtype=np.float32)
    return world(z.shape[1], world_seed).truth(z)


def truth_for_images(latents_csv: str | os.PathLike, img_nos, world_seed: int,
                     z_dim: int | None = None) -> pd.DataFrame:
    """Truth of stage-1 images by number, indexed by ``img_no``."""
    nos, z = read_latents(latents_csv, img_nos, z_dim)
    t = truth_of(z, world_seed)
    t.index = pd.Index(nos, name="img_no")
    return t
