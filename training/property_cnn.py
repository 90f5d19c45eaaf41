"""Training of the property-score CNN (spec 04 §3.3) on the one supervised loop.

The network, its settings and eval-mode scoring live in :mod:`cnn.property_score_cnn`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from cnn.property_score_cnn import P7, PropertyCNNSettings, PropertyScoreCNN, to_signed_nchw
from pipeline.io import atomic_write_text
from pipeline.checkpoint import read_checkpoint, save_checkpoint

from .supervised import FitState, fit


@dataclass
class PropertyCNNResult:
    model: PropertyScoreCNN                  # best epoch's weights, eval mode
    best_epoch: int
    best_criterion: float
    epochs: int
    train_idx: np.ndarray
    valid_idx: np.ndarray
    history: list = field(default_factory=list)       # one dict per epoch (the log rows)
    seconds: float = 0.0


def split_indices(n: int, valid_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train / valid split (train = ``int(n * (1 - valid_fraction))``), both sorted."""
    n_train = int(n * (1 - valid_fraction))
    if n_train < 1 or n_train >= n:
        raise ValueError(f"cannot split {n} images into train / valid with valid_fraction {valid_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).numpy()
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


@torch.inference_mode()
def evaluate(model: PropertyScoreCNN, images, targets: np.ndarray, idx: np.ndarray, batch_size: int,
             exclude: Sequence[str] = ("background_std",)) -> tuple[dict, np.ndarray]:
    """Validation metrics over ``idx`` (eval mode): per property MSE / MAE / Pearson r, the
    overall MSE and the selection criterion (mean MSE without ``exclude``); and the outputs."""
    was_training = model.training
    model.eval()
    try:
        pred = np.concatenate([model(to_signed_nchw(images[idx[i:i + batch_size]])).numpy()
                               for i in range(0, len(idx), batch_size)]).astype(np.float64)
    finally:
        model.train(was_training)
    y = targets[idx].astype(np.float64)
    mse = ((pred - y) ** 2).mean(axis=0)
    mae = np.abs(pred - y).mean(axis=0)
    keep = [i for i, p in enumerate(P7) if p not in exclude]
    row = {"valid_loss": float(mse.mean()), "val_loss_except_back_std": float(mse[keep].mean())}
    for i, p in enumerate(P7):
        row[f"{p}_loss"] = float(mse[i])
        row[f"{p}_abs_diff"] = float(mae[i])
        row[f"{p}_corr"] = _pearson(pred[:, i], y[:, i])
    return row, pred.astype(np.float32)


def train_property_cnn(images, targets, settings: PropertyCNNSettings | None = None, *,
                       log_dir: str | Path | None = None, checkpoint_path: str | Path | None = None,
                       image_names: Sequence[str] | None = None, progress: bool | Callable[[str], None] = True,
                       state_path: str | Path | None = None) -> PropertyCNNResult:
    """Train the property-score CNN (spec 04 §3.3) and keep the best epoch.

    ``images``: indexable by an index array, giving uint8 NCHW (or float [-1, 1]) batches of
    size R (a tensor, an array or a lazy loader); ``targets``: [N, 7] in P7 order.
    Seeded: the 90/10 split, initialisation, dropout and shuffling all derive from
    ``settings.seed``. Loss MSE over all seven outputs; AdamW; cosine LR stepped per epoch.
    After every epoch the validation set is scored in eval mode; the criterion is the mean
    MSE without ``selection_exclude`` (the original's ``(7·MSE − MSE_back_std)/6``); the
    best epoch (strictly lower criterion) is kept; training stops when ``patience`` epochs
    have passed without a new best (or at ``max_epochs``).

    Files (when ``log_dir`` / ``checkpoint_path`` are given, written atomically):
    ``train_log.csv`` (one row per epoch, rewritten each epoch: ``epoch, train_loss, lr,
    valid_loss, val_loss_except_back_std`` and per property ``{p}_loss`` (MSE),
    ``{p}_abs_diff`` (MAE), ``{p}_corr`` (Pearson r over the whole validation set));
    ``val_log.csv`` (the first ``val_log_samples`` validation images per epoch: ``epoch,
    img, {p}_output, {p}_label``); the best epoch's state dict at ``checkpoint_path``
    (written once, at the end: the file marks a finished training).

    ``state_path``: a resumable training state (model, optimiser, scheduler, best epoch, logs
    and the random-number states) written atomically after every epoch; when the file exists
    the training continues after its last epoch and ends exactly as an uninterrupted run.
    It is deleted once the run has finished.
    """
    s = settings or PropertyCNNSettings()
    s.validate()
    targets = np.asarray(targets, dtype=np.float32)
    n = len(images)
    if targets.shape != (n, len(P7)):
        raise ValueError(f"targets must have shape ({n}, {len(P7)}) in P7 order {P7}, got {targets.shape}")
    if not np.isfinite(targets).all():
        bad = np.argwhere(~np.isfinite(targets))[0]
        raise ValueError(f"targets row {bad[0]}, column {P7[bad[1]]} is not finite")
    say = progress if callable(progress) else (print if progress else None)
    seeds = np.random.SeedSequence([int(s.seed), 5]).generate_state(3)
    train_idx, valid_idx = split_indices(n, s.valid_fraction, int(seeds[0]))
    t0 = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(int(seeds[1]))          # initialisation and dropout
        model = s.build()
        shuffle = torch.Generator().manual_seed(int(seeds[2]))
        opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s.t_max, eta_min=0.0)
        y_all = torch.from_numpy(targets)
        names = list(image_names) if image_names is not None else [str(i) for i in range(n)]
        history, val_rows = [], []
        st = FitState()
        state_path = Path(state_path) if state_path is not None else None
        if state_path is not None and state_path.is_file():
            saved = read_checkpoint(state_path)
            if saved.get("settings") != _settings_key(s, n):
                raise ValueError(f"training state {state_path} was made with other settings or data "
                                 f"({saved.get('settings')} vs {_settings_key(s, n)}); delete it to start over")
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            sched.load_state_dict(saved["scheduler"])
            shuffle.set_state(saved["shuffle_rng"])
            torch.set_rng_state(saved["torch_rng"])
            st = FitState(epoch=int(saved["epoch"]), best=float(saved["best"]), best_epoch=int(saved["best_epoch"]),
                          best_state=saved["best_state"])
            history, val_rows = list(saved["history"]), list(saved["val_rows"])
            if say:
                say(f"property CNN: resuming after epoch {st.epoch - 1} ({state_path})")
        epoch_lr = [0.0]

        def train_epoch(epoch: int) -> None:
            perm = train_idx[torch.randperm(len(train_idx), generator=shuffle).numpy()]
            total = 0.0
            epoch_lr[0] = opt.param_groups[0]["lr"]
            for i in range(0, len(perm), s.batch_size):
                b = perm[i:i + s.batch_size]
                loss = nn.functional.mse_loss(model(to_signed_nchw(images[b])), y_all[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(b)
            history.append({"epoch": epoch, "train_loss": total / len(perm), "lr": epoch_lr[0]})

        def validate_epoch(epoch: int) -> float:
            row, pred = evaluate(model, images, targets, valid_idx, s.valid_batch_size, s.selection_exclude)
            history[-1].update(row)
            for k in range(min(s.val_log_samples, len(valid_idx))):
                vr = {"epoch": epoch, "img": names[valid_idx[k]]}
                for j, p in enumerate(P7):
                    vr[f"{p}_output"] = float(pred[k, j])
                    vr[f"{p}_label"] = float(targets[valid_idx[k], j])
                val_rows.append(vr)
            return row["val_loss_except_back_std"]

        def after_epoch(st: FitState) -> None:
            row = history[-1]
            if log_dir is not None:
                _write_logs(Path(log_dir), history, val_rows)
            if say:
                say(f"property CNN epoch {st.epoch - 1}: train {row['train_loss']:.4f} valid {row['valid_loss']:.4f} "
                    f"criterion {row['val_loss_except_back_std']:.4f} (best {st.best:.4f} @ {st.best_epoch})")
            if state_path is not None and not st.finished(s.patience, s.max_epochs):
                save_checkpoint({"settings": _settings_key(s, n), "model": model.state_dict(),
                                 "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                 "shuffle_rng": shuffle.get_state(), "torch_rng": torch.get_rng_state(),
                                 "best": st.best, "best_epoch": st.best_epoch, "best_state": st.best_state,
                                 "history": history, "val_rows": val_rows, "epoch": st.epoch}, state_path)

        st = fit(model, sched, train_epoch, validate_epoch, patience=s.patience, max_epochs=s.max_epochs,
                 state=st, after_epoch=after_epoch)
        best, best_epoch, best_state, epoch = st.best, st.best_epoch, st.best_state, st.epoch
    model.load_state_dict(best_state)
    model.eval()
    if checkpoint_path is not None:
        save_checkpoint({k: v.contiguous() for k, v in model.state_dict().items()}, checkpoint_path)
    if state_path is not None:
        state_path.unlink(missing_ok=True)
    return PropertyCNNResult(model=model, best_epoch=best_epoch, best_criterion=best, epochs=epoch,
                             train_idx=train_idx, valid_idx=valid_idx, history=history,
                             seconds=time.perf_counter() - t0)


def _settings_key(s: PropertyCNNSettings, n: int) -> str:
    """What a resumable state must agree on: the settings (max_epochs may grow) and the data size."""
    d = {k: v for k, v in s.to_dict().items() if k != "max_epochs"}
    return repr(sorted((k, repr(v)) for k, v in d.items())) + f" n={n}"


def _write_logs(log_dir: Path, history: list, val_rows: list) -> None:
    atomic_write_text(log_dir / "train_log.csv", pd.DataFrame(history).to_csv(index=False, lineterminator="\n"))
    atomic_write_text(log_dir / "val_log.csv", pd.DataFrame(val_rows).to_csv(index=False, lineterminator="\n"))
