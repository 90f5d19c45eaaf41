"""The small interface between the one fine-tune loop and a model family's training rule.

A trainer owns its models, optimisers and random streams; the loop owns epochs, batches, resume,
snapshots, shipped-run install, the progress bar, the per-epoch evaluation and the best-epoch
choice. v1 / v4 (GAN), v3 (CVAE) and v9 (split mapping) are trainers, not copies of the loop.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn as nn


@runtime_checkable
class Trainer(Protocol):
    def train_step(self, x_real: torch.Tensor, y_real: torch.Tensor, epoch: int, step: int) -> dict[str, float]:
        """One optimisation step on a batch of real images (uint8 or float, NCHW) and their labels;
        returns the figures to log for this step (losses, counts)."""

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Called after the last step of an epoch; returns per-epoch figures (may be empty)."""

    def state(self) -> dict:
        """Everything needed to resume: model and optimiser states, random streams, counters."""

    def load(self, state: dict) -> None:
        """Restore what ``state()`` returned."""

    def models(self) -> dict[str, nn.Module]:
        """The models a snapshot saves and the evaluation renders from, by name (e.g. generator)."""
