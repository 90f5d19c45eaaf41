"""The oracle: an ideal conditional generator of the synthetic world, as a renderer of (z, label).

For each latent z the oracle renders ``render(truth(z))`` with ``eyes_open``, ``mouth_open`` and
``pose`` replaced by the label's values (label units -> world units by a least-squares line
fitted on the kept set's labels and truths, clipped to the kept set's range); every other
parameter (hair, background, age, glasses, ...) is exactly z's. So the person cannot change, and
whatever the generation test measures beyond the controlled properties is the judges' own
cross-talk: no fine-tuned generator can show less leak than the oracle through the same judges.
"""
from __future__ import annotations

import numpy as np
import torch

from synthface.renderer import render_batch

CONTROLLED = {"eyes": "eyes_open", "mouth": "mouth_open", "pose": "pose"}   # label -> world parameter


class OracleGenerator:
    """``render(z, label)`` -> images in [-1, 1]: the world's render of z with the controlled
    parameters set from the label (see the module docstring)."""

    def __init__(self, world, label_names, fit: dict, resolution: int):
        self.world, self.label_names, self.fit, self.resolution = world, tuple(label_names), fit, int(resolution)
        self.z_dim = int(world.z_dim)

    @classmethod
    def fitted(cls, world, label_names, z_kept: np.ndarray, labels_kept: np.ndarray, resolution: int):
        t = world.truth(np.asarray(z_kept, np.float32))
        fit = {}
        for p, col in CONTROLLED.items():
            y = np.asarray(labels_kept[:, list(label_names).index(p)], np.float64)
            x = t[col].to_numpy(np.float64)
            a, b = np.polyfit(y, x, 1)
            fit[p] = {"column": col, "scale": float(a), "offset": float(b), "low": float(x.min()),
                      "high": float(x.max())}
        return cls(world, label_names, fit, resolution)

    def parameters(self, z, label):
        t = self.world.truth(np.asarray(torch.as_tensor(z).cpu(), np.float32)).copy()
        lab = np.asarray(torch.as_tensor(label).cpu(), np.float64)
        for p, f in self.fit.items():
            t[f["column"]] = np.clip(lab[:, self.label_names.index(p)] * f["scale"] + f["offset"], f["low"], f["high"])
        return t

    def render(self, z, label):
        rgb, _ = render_batch(self.parameters(z, label), self.resolution)
        return torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1.0
