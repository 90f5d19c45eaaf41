"""K-fold training of the filter CNNs (spec 01 §2.4, 02 §1.4): the attempts of one fold through the
one supervised loop (:func:`training.supervised.fit`), retries, logs and model files.

The settings, splits, seeds, models, metrics and validation live in :mod:`cnn.kfold` (see its
docstring for the rules and the file formats); this module runs them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from cnn.kfold import (DETAIL_COLUMNS, LOG_COLUMNS, SANITY_TOLERANCE, FoldFailedError, FoldSettings, _batch,
                       binary_metrics, derive_seed, fold_splits, load_model, model_path, new_model, validate)
from pipeline.checkpoint import save_checkpoint
from pipeline.io import atomic_write_text

from .supervised import FitState, fit


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
