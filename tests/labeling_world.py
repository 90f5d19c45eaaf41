"""A small synthface stage-1 folder for the labelling tests: latents from the world's z stream,
rendered faces (or flat tiles, when the pixels do not matter) and optionally the emulated labels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.io import atomic_write_csv, atomic_write_png

Z_DIM = 256


def make_stage1(stage1: Path, n: int, res: int = 128, render: bool = True, seed: int = 0) -> Path:
    from synthface.truth import world
    stage1 = Path(stage1)
    (stage1 / "images").mkdir(parents=True, exist_ok=True)
    w = world(Z_DIM, 0)
    z = w.sample_z(n, seed=seed)
    if render:
        from synthface.renderer import render_batch
        rgb, _ = render_batch(w.truth(z), res)
    else:
        rgb = np.broadcast_to((np.arange(n, dtype=np.uint8) * 37)[:, None, None, None], (n, res, res, 3))
    for i in range(n):
        atomic_write_png(stage1 / "images" / f"{i:06d}.png", np.ascontiguousarray(rgb[i]))
    lat = pd.concat([pd.DataFrame({"img_no": np.arange(n), "img_name": [f"{i:06d}.png" for i in range(n)]}),
                     pd.DataFrame(z, columns=[f"z_{i}" for i in range(Z_DIM)])], axis=1)
    atomic_write_csv(stage1 / "latents.csv", lat)
    return stage1


def hand_label_settings(profile) -> dict:
    """The profile's emulated-labeller settings as stage 1 passes them to write_labels_for_stage1."""
    cfg = profile["hand_labels"]
    return {"world_seed": int(profile["world_seed"]), "count": int(cfg["count"]),
            "noise_rate": float(cfg["noise_rate"]), "seed": int(cfg["seed"])}
