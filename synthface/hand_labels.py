"""Emulated hand labels for the synthface profile.

The original author labelled the first 2,000 generated images by hand (gender and
quality; later age and glasses too). Here the labels come from the ground truth
truth(z) of each image's latent, with a small seeded label-noise rate (each label
flipped independently with probability ``noise_rate``) so they behave like a person's.

Files (original format: no index column, ``img_name`` is the integer image number):
* ``synthesize_results_quality_and_gender.csv``: ``img_name, quality, gender``
  (quality 1 = good, 0 = defect; gender 1 = female, 0 = male)
* ``synthesize_results_age_and_glass.csv``: ``img_name, age, glass`` (age 1 = old; glass 1 = glasses)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.io import atomic_write_csv
from pipeline.latents import read_latents

from .truth import truth_of

QG_FILE = "synthesize_results_quality_and_gender.csv"
AG_FILE = "synthesize_results_age_and_glass.csv"


def emulate_hand_labels(truth: pd.DataFrame, img_nos, noise_rate: float, seed: int) -> tuple[pd.DataFrame, dict]:
    if not 0.0 <= noise_rate < 0.5:
        raise ValueError(f"label noise rate must be in [0, 0.5), got {noise_rate}")
    clean = {
        "quality": 1 - truth["quality_defect"].to_numpy().round().astype(int),
        "gender": truth["female"].to_numpy().round().astype(int),
        "age": truth["old"].to_numpy().round().astype(int),
        "glass": truth["glasses"].to_numpy().round().astype(int),
    }
    rng = np.random.default_rng([int(seed), 4242])
    noisy, flips = {}, {}
    for name, lab in clean.items():
        flip = rng.random(len(lab)) < noise_rate
        noisy[name] = np.where(flip, 1 - lab, lab)
        flips[name] = int(flip.sum())
    df = pd.DataFrame({"img_name": np.asarray(img_nos, dtype=int), **noisy})
    stats = {"count": len(df), "noise_rate": noise_rate, "seed": seed, "flipped": flips,
             "positives": {k: int(v.sum()) for k, v in noisy.items()}}
    return df, stats


def labels_for_stage1(latents: pd.DataFrame, world_seed: int, count: int, noise_rate: float,
                      seed: int) -> tuple[pd.DataFrame, dict]:
    """The emulated labeller's labels for images 0..count-1 of a finished stage 1 (z read from its
    latents table): ``img_name, quality, gender, age, glass`` sorted by image number, and statistics."""
    rows = latents[latents["img_no"] < count].sort_values("img_no")
    if len(rows) < count:
        raise ValueError(f"stage 1 has {len(rows)} images, fewer than the {count} to label")
    zcols = [c for c in rows.columns if c.startswith("z_")]
    truth = truth_of(rows[zcols].to_numpy(np.float32), world_seed)
    return emulate_hand_labels(truth, rows["img_no"].to_numpy(), noise_rate, seed)


def write_hand_labels(stage1_dir: Path, latents: pd.DataFrame, world_seed: int, count: int, noise_rate: float,
                      seed: int) -> dict:
    """Write the label files for images 0..count-1 of a finished stage 1."""
    df, stats = labels_for_stage1(latents, world_seed, count, noise_rate, seed)
    atomic_write_csv(Path(stage1_dir) / QG_FILE, df[["img_name", "quality", "gender"]])
    atomic_write_csv(Path(stage1_dir) / AG_FILE, df[["img_name", "age", "glass"]])
    return stats


def write_labels_for_stage1(stage1_dir: Path, world_seed: int, count: int, noise_rate: float, seed: int) -> dict:
    """Stage-1 hook of the synthface profile: write the label files next to the images; returns their
    statistics (stage 1 records them in its ``metrics.json``, written after them)."""
    stage1 = Path(stage1_dir)
    nos, z = read_latents(stage1 / "latents.csv")
    latents = pd.concat([pd.DataFrame({"img_no": nos}),
                         pd.DataFrame(z, columns=[f"z_{i}" for i in range(z.shape[1])])], axis=1)
    stats = write_hand_labels(stage1, latents, world_seed, min(int(count), len(latents)),
                              float(noise_rate), int(seed))
    return {**stats, "files": [QG_FILE, AG_FILE]}
