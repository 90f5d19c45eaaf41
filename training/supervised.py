"""The one supervised fit loop with early stopping, shared by every CNN trained on labels.

Each epoch: ``model.train()``, the caller's ``train_epoch(epoch)`` (batches, optimiser steps),
the caller's ``validate(epoch)`` returning the selection criterion (lower is better); an epoch
whose criterion is strictly lower than the best so far becomes the best and its weights are
copied (ties keep the earlier epoch); then the scheduler steps once and ``after_epoch`` runs
(logs, progress, a resumable state). Training stops when ``patience`` epochs have passed
without a new best, or at ``max_epochs`` (None: no cap). The loop makes no random choice and
no float operation of its own, so a model trained through it is bit-identical to one trained
by the same steps written out inline.

Users: the filter CNNs' K-fold attempts (:func:`training.filter_cnns.train_attempt`) and the property-score
CNN (:func:`training.property_cnn.train_property_cnn`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn


@dataclass
class FitState:
    """Where a fit stands: the next epoch, the best criterion, its epoch and weights."""
    epoch: int = 0
    best: float = math.inf
    best_epoch: int = -1
    best_state: dict | None = None
    history: list = field(default_factory=list)       # the caller's per-epoch records (kept for resume)

    def finished(self, patience: int, max_epochs: int | None) -> bool:
        """True once an epoch has run and ``patience`` epochs passed without a new best, or at ``max_epochs``."""
        return self.epoch > 0 and (self.epoch - 1 - self.best_epoch >= patience
                                   or (max_epochs is not None and self.epoch >= max_epochs))


def fit(model: nn.Module, scheduler, train_epoch: Callable[[int], None], validate: Callable[[int], float], *,
        patience: int, max_epochs: int | None, state: FitState | None = None,
        after_epoch: Callable[[FitState], None] | None = None) -> FitState:
    """Run epochs until early stopping (see the module docstring); returns the final state.

    ``state`` continues an earlier fit (resume). ``after_epoch(state)`` sees ``state.epoch``
    already advanced (the epoch just run is ``state.epoch - 1``). The best weights are left in
    ``state.best_state``; loading them into the model is the caller's choice."""
    st = state or FitState()
    while not st.finished(patience, max_epochs):
        model.train()
        train_epoch(st.epoch)
        criterion = validate(st.epoch)
        if criterion < st.best:                          # strictly lower: ties keep the earlier epoch
            st.best, st.best_epoch = criterion, st.epoch
            st.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        scheduler.step()
        st.epoch += 1
        if after_epoch is not None:
            after_epoch(st)
    return st
