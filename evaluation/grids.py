"""The monitoring grid of a conditional generator: 10 seeded z (rows) x the original's 7 monitoring
labels (columns; one property changes per column), written after every FineTune-v1 / v4 epoch."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.vocabulary import PROPERTIES as P7
from stylegan.generator import postprocess
from stylegan.sampling import latent_z
from stylegan_modified.conditional import batch_ranges, synthesize

from .generation_report import mosaic_figure

# the original's 7 monitoring labels (spec 04 §2.4), P7 order; one property changes per row
MONITOR_LABELS = np.array([
    [1.5, 1.5, 1.1, -1.1, -1.2, 1.2, -1.0],
    [-1.5, 1.5, 1.1, -1.1, -1.2, 1.2, -1.0],
    [-1.5, -1.5, 1.1, -1.1, -1.2, 1.2, -1.0],
    [-1.5, -1.5, -2.0, -1.1, -1.2, 1.2, -1.0],
    [-1.5, -1.5, -2.0, 1.8, -1.2, 1.2, -1.0],
    [-1.5, -1.5, -2.0, 1.8, 2.0, 1.2, -1.0],
    [-1.5, -1.5, -2.0, 1.8, 2.0, -1.6, -1.0],
], dtype=np.float32)
MONITOR_CHANGED = ("start", "eyes", "hair_color", "hair_length", "mouth", "pose", "background_mean")


def monitor_labels(label_names) -> np.ndarray:
    """The 7 monitoring labels restricted to ``label_names`` (v4: the P3 columns)."""
    return MONITOR_LABELS[:, [P7.index(n) for n in label_names]]


def grid_figure(g, path: Path, n_z: int = 10, seed: int = 0, title: str = "") -> Path:
    """10 seeded z (rows) x the 7 monitoring labels (columns), eval semantics."""
    z = latent_z(range(n_z), int(g.cfg.z_dim), int(seed) + 800_000)
    labels = monitor_labels(g.label_names)
    zi, li = np.repeat(np.arange(n_z), len(labels)), np.tile(np.arange(len(labels)), n_z)
    imgs = np.concatenate([postprocess(synthesize(g, z[zi[a:b]], labels[li[a:b]]).cpu())
                           for a, b in batch_ranges(len(zi), 35)])
    cells = [list(imgs[i * len(labels):(i + 1) * len(labels)]) for i in range(n_z)]
    cols = [f"{i + 1}: {c}" for i, c in enumerate(MONITOR_CHANGED)]
    return mosaic_figure(cells, [f"z {i}" for i in range(n_z)], cols, Path(path), title)
