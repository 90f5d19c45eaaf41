"""K-fold training of the stage-2 filter CNNs (spec 01 §2.4, 02 §1.4): settings, splits, seeds, models,
metrics and validation; the attempts themselves run in :mod:`training.filter_cnns`.

Per property: the hand-labelled images are split into K folds (stratified on the 0/1
label by default, shuffled, ``random_state`` = the stage seed); one model per fold:

* loss BCE with sum reduction (reported loss = sum / number of samples), AdamW
  (betas 0.9/0.999, weight decay 0.01), CosineAnnealingLR(T_max, eta_min 0) stepped once
  per epoch after validation (not restarted: period 2·T_max);
* validation in eval mode under ``inference_mode``, fixed order;
* early stopping when ``patience`` epochs have passed without a strictly lower valid
  loss (stop when epoch - best >= patience), optionally capped at ``max_epochs``;
  the weights of the best epoch are kept and re-validated (must match the logged minimum);
* a fold succeeds if its minimum valid loss <= the property's threshold, otherwise it is
  retrained from a new seeded initialisation, at most ``max_attempts`` attempts in all;
  when the cap is hit a :class:`FoldFailedError` names the property, fold and losses.

Everything is seeded: the fold split by ``seed``, each attempt's initialisation, dropout
and shuffling by a seed derived from (seed, property, fold, attempt). Initialisation is
PyTorch's default (the original's) or, as profile data, Kaiming for the convs
(:func:`init_weights`); optional ``pretrained`` weights are loaded strictly into every attempt. A fold's model file
is its completion marker: a re-run trains only the folds whose file is missing, and an
interrupted fold restarts from its first attempt, so the result equals an uninterrupted run.

Files (``log_dir``; formats of spec 01 §2.4):

* ``train_log_{prop}.csv``: pandas index, ``fold_no, success, min_val_loss, total_epochs,
  best_epoch, elapsed_time (s), val_loss_list`` — one row per attempt (failed ones too),
  rewritten after each attempt; losses rounded to 4, time to 2; ``best_epoch`` is the first
  argmin of the rounded list; epochs count from 0.
* ``epoch_detail_{prop}_{fold}.csv`` (successful attempt): ``epoch, val_loss, val_accuracy,
  tp, tn, fp, fn, val_recall, val_precision, val_f1_score, val_auroc``; recall / precision /
  F1 / AUROC empty when undefined.
* ``train_loss_{prop}_{fold}.csv`` (successful attempt): ``epoch, train_loss`` (for the curves).
* models: ``{prop}_model_{fold}.pt`` in ``model_dir``: plain float32 state_dicts.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold

from pipeline.checkpoint import load_state_dict_strict, read_checkpoint

from .filter_cnns import PROPERTIES, FilterCNN, to_unit_float

DETAIL_COLUMNS = ["epoch", "val_loss", "val_accuracy", "tp", "tn", "fp", "fn", "val_recall", "val_precision",
                  "val_f1_score", "val_auroc"]
LOG_COLUMNS = ["fold_no", "success", "min_val_loss", "total_epochs", "best_epoch", "elapsed_time (s)",
               "val_loss_list"]
SANITY_TOLERANCE = 2e-5


class FoldFailedError(RuntimeError):
    """A fold's validation loss stayed above its threshold in every allowed attempt."""


@dataclass
class FoldSettings:
    """Training settings of one property (profile data; defaults are the spec's values)."""
    prop: str
    lr: float
    threshold: float                 # success: min valid BCE <= threshold
    cut: float                       # positive iff score >= cut (per-epoch metrics)
    resolution: int = 256
    width: float = 1.0
    padding: int = 0
    folds: int = 5
    split: str = "stratified"        # "stratified" (StratifiedKFold) or "kfold" (KFold)
    batch_size: int = 16
    valid_batch_size: int = 4
    patience: int = 20
    max_epochs: int | None = None    # None: early stopping only (the spec)
    t_max: int = 10
    weight_decay: float = 0.01
    max_attempts: int = 5
    seed: int = 0
    init: str = "pytorch"            # "pytorch" (default layer init, the original's) or "kaiming" (see init_weights)
    pretrained: str | None = None    # optional state_dict file every attempt starts from (strict load)
    channels_last: bool = True       # memory layout only (faster on CPU); the maths is unchanged

    def validate(self) -> None:
        if self.prop not in PROPERTIES:
            raise ValueError(f"unknown property {self.prop!r}")
        if self.folds < 2:
            raise ValueError(f"{self.prop}: folds must be >= 2, got {self.folds}")
        if self.split not in ("stratified", "kfold"):
            raise ValueError(f"{self.prop}: split must be 'stratified' or 'kfold', got {self.split!r}")
        for name in ("batch_size", "valid_batch_size", "patience", "t_max", "max_attempts"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{self.prop}: {name} must be >= 1, got {getattr(self, name)}")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ValueError(f"{self.prop}: max_epochs must be >= 1 or null, got {self.max_epochs}")
        if not self.lr > 0:
            raise ValueError(f"{self.prop}: lr must be > 0, got {self.lr}")
        if self.init not in ("pytorch", "kaiming"):
            raise ValueError(f"{self.prop}: init must be 'pytorch' or 'kaiming', got {self.init!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def derive_seed(seed: int, prop: str, fold: int, attempt: int) -> int:
    """A 31-bit seed for one training attempt, independent of every other attempt."""
    ss = np.random.SeedSequence([int(seed), PROPERTIES.index(prop), int(fold), int(attempt), 2])
    return int(ss.generate_state(1)[0] & 0x7FFFFFFF)


def fold_splits(labels: np.ndarray, s: FoldSettings) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_idx, valid_idx) per fold, both sorted; seeded by ``s.seed``."""
    y = np.asarray(labels).astype(int)
    n = len(y)
    if s.split == "stratified":
        counts = np.bincount(y, minlength=2)
        if counts.min() < s.folds:
            raise ValueError(f"{s.prop}: stratified {s.folds}-fold split needs at least {s.folds} labels of each "
                             f"class; the labels have {counts[0]} x 0 and {counts[1]} x 1")
        splitter = StratifiedKFold(s.folds, shuffle=True, random_state=s.seed)
        it = splitter.split(np.zeros(n), y)
    else:
        if n < s.folds:
            raise ValueError(f"{s.prop}: {s.folds}-fold split needs at least {s.folds} images, got {n}")
        it = KFold(s.folds, shuffle=True, random_state=s.seed).split(np.zeros(n))
    return [(np.sort(tr), np.sort(va)) for tr, va in it]


def model_path(model_dir: Path, prop: str, fold: int) -> Path:
    return Path(model_dir) / f"{prop}_model_{fold}.pt"


def build_model(s: FoldSettings) -> FilterCNN:
    m = FilterCNN(s.prop, s.resolution, s.width, s.padding)
    return m.to(memory_format=torch.channels_last) if s.channels_last else m


def init_weights(model: FilterCNN, how: str) -> None:
    """``pytorch``: keep PyTorch's default layer init (what the original used). ``kaiming``:
    He-normal conv weights for LeakyReLU(0.01) and zero conv biases (linear layers keep the
    default); an unnormalised deep stack then starts with unit-scale activations instead of
    shrinking ones, which shortens the initial plateau of narrow nets a lot."""
    if how == "pytorch":
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=0.01, nonlinearity="leaky_relu")
            nn.init.zeros_(m.bias)


def new_model(s: FoldSettings) -> FilterCNN:
    """A model for a training attempt (call after seeding): init scheme, then the optional pretrained weights."""
    model = build_model(s)
    init_weights(model, s.init)
    if s.pretrained:
        load_state_dict_strict(model, read_checkpoint(s.pretrained), what=f"{s.prop} pretrained weights {s.pretrained}")
    return model


def load_model(s: FoldSettings, path: Path) -> FilterCNN:
    """Strict, ``weights_only`` load of a saved fold model (errors name the file and the keys)."""
    model = build_model(s)
    state = read_checkpoint(path)
    load_state_dict_strict(model, state, what=f"{s.prop} model {path}")
    return model.eval()


# ------------------------------------------------------------------------------------ metrics

def binary_metrics(scores: np.ndarray, labels: np.ndarray, cut: float) -> dict:
    """Accuracy, TP/TN/FP/FN, recall, precision, F1 at ``cut`` (inclusive) and AUROC; '' when undefined."""
    pred = scores >= cut
    lab = labels >= cut
    tp = int(np.sum(pred & lab))
    tn = int(np.sum(~pred & ~lab))
    fp = int(np.sum(pred & ~lab))
    fn = int(np.sum(~pred & lab))
    n = len(scores)
    recall = tp / (tp + fn) if tp + fn > 0 else ""
    precision = tp / (tp + fp) if tp + fp > 0 else ""
    f1 = 2 * recall * precision / (recall + precision) if tp > 0 else ""
    auroc = float(roc_auc_score(lab.astype(int), scores)) if 0 < lab.sum() < n else ""
    return {"val_accuracy": (tp + tn) / n if n else "", "tp": tp, "tn": tn, "fp": fp, "fn": fn,
            "val_recall": recall, "val_precision": precision, "val_f1_score": f1, "val_auroc": auroc}


# ------------------------------------------------------------------------------------ loops

def _batch(images_u8: torch.Tensor, idx, model: FilterCNN, channels_last: bool) -> torch.Tensor:
    x = model.crop_input(images_u8[idx])
    x = to_unit_float(x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def validate(model: FilterCNN, images_u8: torch.Tensor, labels: torch.Tensor, idx: np.ndarray,
             s: FoldSettings) -> tuple[float, np.ndarray]:
    """(sum BCE / n, scores) over ``idx`` in order, eval mode, inference_mode."""
    model.eval()
    loss_fn = nn.BCELoss(reduction="sum")
    total = 0.0
    out = []
    with torch.inference_mode():
        for i in range(0, len(idx), s.valid_batch_size):
            b = idx[i:i + s.valid_batch_size]
            p = model.forward_cropped(_batch(images_u8, b, model, s.channels_last))
            total += float(loss_fn(p, labels[b]))
            out.append(p.numpy().astype(np.float64))
    return total / len(idx), np.concatenate(out)
