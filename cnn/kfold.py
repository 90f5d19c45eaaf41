"""K-fold training of the stage-2 filter CNNs (spec 01 §2.4, 02 §1.4).

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

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold

from pipeline.io import atomic_write_text
from pipeline.checkpoint import load_state_dict_strict, read_checkpoint, save_checkpoint
from training.supervised import FitState, fit

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


@dataclass
class AttemptResult:
    fold: int
    attempt: int
    seed: int
    success: bool
    min_val_loss: float
    best_epoch: int               # epoch whose weights are kept (first strict minimum)
    total_epochs: int
    elapsed: float
    val_losses: list = field(default_factory=list)
    train_losses: list = field(default_factory=list)
    details: list = field(default_factory=list)
    state: dict | None = None


def train_attempt(s: FoldSettings, images_u8: torch.Tensor, labels: torch.Tensor, train_idx: np.ndarray,
                  valid_idx: np.ndarray, fold: int, attempt: int,
                  progress: Callable[[str], None] | None = None) -> AttemptResult:
    seed = derive_seed(s.seed, s.prop, fold, attempt)
    t0 = time.perf_counter()
    torch.manual_seed(seed)                       # initialisation and dropout
    model = new_model(s)
    gen = torch.Generator().manual_seed(seed)     # shuffling
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s.t_max, eta_min=0.0)
    loss_fn = nn.BCELoss(reduction="sum")
    train_t = torch.from_numpy(train_idx)
    val_losses, train_losses, details = [], [], []
    valid_labels = labels[valid_idx].numpy()

    def train_epoch(epoch: int) -> None:
        perm = train_t[torch.randperm(len(train_t), generator=gen)].numpy()
        tot = 0.0
        for i in range(0, len(perm), s.batch_size):
            b = perm[i:i + s.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model.forward_cropped(_batch(images_u8, b, model, s.channels_last)), labels[b])
            loss.backward()
            opt.step()
            tot += float(loss.detach())
        train_losses.append(tot / len(perm))

    def validate_epoch(epoch: int) -> float:
        vloss, vscores = validate(model, images_u8, labels, valid_idx, s)
        val_losses.append(vloss)
        details.append({"epoch": epoch, "val_loss": vloss, **binary_metrics(vscores, valid_labels, s.cut)})
        return vloss

    def after_epoch(st: FitState) -> None:
        if progress:
            progress(f"{s.prop} fold {fold} try {attempt} ep {st.epoch - 1} val {val_losses[-1]:.4f} "
                     f"best {st.best:.4f}@{st.best_epoch}")

    st = fit(model, sched, train_epoch, validate_epoch, patience=s.patience, max_epochs=s.max_epochs,
             after_epoch=after_epoch)
    best, best_epoch, best_state, epoch = st.best, st.best_epoch, st.best_state, st.epoch
    model.load_state_dict(best_state)
    check, _ = validate(model, images_u8, labels, valid_idx, s)
    if abs(check - best) > SANITY_TOLERANCE:
        raise RuntimeError(f"{s.prop} fold {fold}: the kept best model re-validates at {check:.6f}, "
                           f"but the logged minimum is {best:.6f} (tolerance {SANITY_TOLERANCE})")
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    return AttemptResult(fold=fold, attempt=attempt, seed=seed, success=best <= s.threshold, min_val_loss=best,
                         best_epoch=best_epoch, total_epochs=epoch, elapsed=time.perf_counter() - t0,
                         val_losses=val_losses, train_losses=train_losses, details=details, state=state)


# ------------------------------------------------------------------------------------ logs

def _log_row(r: AttemptResult) -> dict:
    rounded = [round(v, 4) for v in r.val_losses]
    return {"fold_no": r.fold, "success": bool(r.success), "min_val_loss": round(r.min_val_loss, 4),
            "total_epochs": r.total_epochs, "best_epoch": int(np.argmin(rounded)),
            "elapsed_time (s)": round(r.elapsed, 2), "val_loss_list": "[" + ", ".join(repr(v) for v in rounded) + "]"}


def write_train_log(path: Path, rows: list[dict]) -> None:
    df = pd.DataFrame(rows, columns=LOG_COLUMNS)
    atomic_write_text(path, df.to_csv(index=True, lineterminator="\n"))


def read_train_log(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    df = pd.read_csv(path, index_col=0, keep_default_na=False)
    return df[LOG_COLUMNS].to_dict("records") if set(LOG_COLUMNS) <= set(df.columns) else []


def write_detail(log_dir: Path, prop: str, r: AttemptResult) -> None:
    det = pd.DataFrame(r.details, columns=DETAIL_COLUMNS)          # full-precision floats, '' when undefined
    atomic_write_text(Path(log_dir) / f"epoch_detail_{prop}_{r.fold}.csv", det.to_csv(index=False, lineterminator="\n"))
    tl = pd.DataFrame({"epoch": range(len(r.train_losses)), "train_loss": r.train_losses})
    atomic_write_text(Path(log_dir) / f"train_loss_{prop}_{r.fold}.csv", tl.to_csv(index=False, lineterminator="\n"))


# ------------------------------------------------------------------------------------ per property

def train_property(s: FoldSettings, images_u8: torch.Tensor, labels: np.ndarray, model_dir: Path, log_dir: Path,
                   progress: Callable[[str], None] | None = None) -> dict:
    """Train every fold of ``s.prop`` whose model file is missing; return a summary.

    ``images_u8``: uint8 [N, 3, R, R] (the hand-labelled images, any memory layout);
    ``labels``: 0/1 per image. Existing model files are loaded strictly (an unloadable file
    is an error, never silently retrained).
    """
    s.validate()
    model_dir, log_dir = Path(model_dir), Path(log_dir)
    labels_t = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    splits = fold_splits(labels, s)
    todo = [k for k in range(s.folds) if not model_path(model_dir, s.prop, k).is_file()]
    for k in range(s.folds):
        if k not in todo:
            load_model(s, model_path(model_dir, s.prop, k))       # strict check of finished folds
    summary = {"prop": s.prop, "trained_folds": todo, "attempts": {}, "seeds": {}, "seconds": 0.0}
    if not todo:
        return summary
    model_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"train_log_{s.prop}.csv"
    rows = [r for r in read_train_log(log_path) if int(r["fold_no"]) not in todo]
    t0 = time.perf_counter()
    for k in todo:
        tr, va = splits[k]
        failures = []
        for attempt in range(s.max_attempts):
            r = train_attempt(s, images_u8, labels_t, tr, va, k, attempt, progress)
            rows.append(_log_row(r))
            rows.sort(key=lambda row: int(row["fold_no"]))          # stable: attempts stay in order
            write_train_log(log_path, rows)
            summary["attempts"].setdefault(k, []).append({"attempt": attempt, "seed": r.seed,
                                                          "min_val_loss": r.min_val_loss, "success": r.success})
            if r.success:
                write_detail(log_dir, s.prop, r)
                save_checkpoint(r.state, model_path(model_dir, s.prop, k))   # the fold's completion marker
                summary["seeds"][k] = r.seed
                break
            failures.append(r.min_val_loss)
        else:
            raise FoldFailedError(
                f"{s.prop} CNN, fold {k}: the minimum validation BCE stayed above the threshold {s.threshold} in all "
                f"{s.max_attempts} attempts (minima: {', '.join(f'{v:.4f}' for v in failures)}); see {log_path}. "
                f"Raise stage2.max_attempts, the threshold, or train longer (stage2.max_epochs / lr).")
    summary["seconds"] = time.perf_counter() - t0
    return summary
