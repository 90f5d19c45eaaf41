"""The property-score CNN of stage 5 (spec 04 §3): seven property scores from one image.

Input: RGB images [B, 3, R, R] in [-1, 1] (``uint8 / 127.5 - 1``). Output: [B, 7] in the
P7 order :data:`P7` = (eyes, hair_color, hair_length, mouth, pose, background_mean,
background_std) — the order of every 7-d label and of the ``all_scores*.csv`` columns.

Six independent branches (no shared weights), each on its own crop, given as fractions
of the resolution (half-open, floored to pixels; at R = 256 exactly the original boxes):

===========  ==============================  ================================  =======
branch       rows x cols (fractions of R)    layers (c conv, P 2x2 max-pool)   outputs
===========  ==============================  ================================  =======
eyes         [3/8, 9/16) x [1/4, 3/4)        c32 c64 P c64 P c128 P             1
mouth        [5/8, 13/16) x [3/8, 5/8)       c32 c64 P c64 P c128 P             1
pose         [7/16, 5/8) x [11/32, 21/32)    c32 c64 P c64 P c128 c128          1
hair_color   whole image                     c32 c64 P c64 P (c128 P) x 3       1
hair_length  [1/2, 1) x all                  c32 c64 P c64 P (c128 P) x 2 c128  1
background   [0, 1/2) x all                  as hair_length                     2
===========  ==============================  ================================  =======

conv = Conv 3x3 (stride 1, bias) -> LeakyReLU(0.01) -> Dropout2d(0.05); head per branch =
Linear(flatten -> 256) -> Tanh -> Dropout(0.45) -> Linear(256 -> k), no output activation;
the flatten is channel-major. At R = 256, width 1, padding 0 the state dict has the
original's 86 entries in its order (branches ``eyes_score_cnn``, ``mouth_score_cnn``,
``pose_score_cnn``, ``hair_color_score_cnn``, ``hair_length_score_cnn``,
``background_score_cnn``; inside each ``conv{i}.0.*``, ``fc1.0.*``, ``fc_final.*``) and
11,516,807 parameters.

Knobs for small CPU profiles (the synthface world is 128 px):

* ``width``: a factor on every conv's channel count (rounded, at least 1), or a dict
  ``branch -> factor | list of the conv output channels``; ``head_units`` narrows the
  256-unit hidden layer;
* ``padding``: 0 = the original's unpadded convs; 1 = "same" convs. At 128 px the unpadded
  pose branch shrinks to nothing at its last conv, so 128-px profiles use padding 1.

Training (:func:`train_property_cnn`, spec 04 §3.3) and batched eval-mode scoring
(:func:`score_images`) are here too, for the stage-5 script.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction as F
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from tqdm import tqdm

from pipeline.io import atomic_write_text
from pipeline.vocabulary import CONTROLLED, PROPERTIES, SCORE_COLUMNS
from pipeline.checkpoint import load_state_dict_strict, read_checkpoint, save_checkpoint
from training.supervised import FitState, fit

P7 = PROPERTIES            # the seven property scores, in the score CSVs' order
P3 = CONTROLLED            # the three controlled properties

# branch -> (crop (row0, row1, col0, col1) as fractions, layers, outputs (names, in P7))
BRANCHES = {
    "eyes": ((F(3, 8), F(9, 16), F(1, 4), F(3, 4)), (32, 64, "P", 64, "P", 128, "P"), ("eyes",)),
    "mouth": ((F(5, 8), F(13, 16), F(3, 8), F(5, 8)), (32, 64, "P", 64, "P", 128, "P"), ("mouth",)),
    "pose": ((F(7, 16), F(5, 8), F(11, 32), F(21, 32)), (32, 64, "P", 64, "P", 128, 128), ("pose",)),
    "hair_color": ((F(0), F(1), F(0), F(1)), (32, 64, "P", 64, "P", 128, "P", 128, "P", 128, "P"), ("hair_color",)),
    "hair_length": ((F(1, 2), F(1), F(0), F(1)), (32, 64, "P", 64, "P", 128, "P", 128, "P", 128), ("hair_length",)),
    "background": ((F(0), F(1, 2), F(0), F(1)), (32, 64, "P", 64, "P", 128, "P", 128, "P", 128),
                   ("background_mean", "background_std")),
}
HEAD_UNITS = 256
CONV_DROPOUT = 0.05
HEAD_DROPOUT = 0.45
LRELU_SLOPE = 0.01


def branch_crop(branch: str, resolution: int) -> tuple[int, int, int, int]:
    """Pixel box ``(r0, r1, c0, c1)`` (half-open) of ``branch`` at ``resolution``."""
    if branch not in BRANCHES:
        raise ValueError(f"unknown branch {branch!r}; expected one of {', '.join(BRANCHES)}")
    return tuple(int(f * int(resolution)) for f in BRANCHES[branch][0])


def branch_channels(branch: str, width) -> list[int]:
    """Conv output channels of ``branch``: ``width`` is a factor, or a dict branch -> factor | list."""
    spec = [c for c in BRANCHES[branch][1] if c != "P"]
    w = width.get(branch, 1.0) if isinstance(width, dict) else width
    if isinstance(w, (list, tuple)):
        if len(w) != len(spec) or any(int(c) < 1 for c in w):
            raise ValueError(f"{branch} branch: explicit channels must be {len(spec)} positive counts "
                             f"(the original's are {spec}), got {list(w)}")
        return [int(c) for c in w]
    if not float(w) > 0:
        raise ValueError(f"{branch} branch: width must be > 0, got {w}")
    return [max(1, round(c * float(w))) for c in spec]


class PropertyBranch(nn.Module):
    """One crop's CNN: convs (each ``conv{i}`` = Sequential(Conv, LReLU, Dropout2d)), pools, head."""

    def __init__(self, branch: str, resolution: int, width=1.0, padding: int = 0, head_units: int = HEAD_UNITS):
        super().__init__()
        if padding not in (0, 1):
            raise ValueError(f"padding must be 0 (the original's valid convs) or 1 (same convs), got {padding}")
        self.branch = branch
        self.crop = branch_crop(branch, resolution)
        self.outputs = BRANCHES[branch][2]
        chans = iter(branch_channels(branch, width))
        r0, r1, c0, c1 = self.crop
        c, h, w = 3, r1 - r0, c1 - c0
        self.order: list[str] = []
        self.shapes: list[tuple] = [("crop", c, h, w)]
        counts = {"conv": 0, "pool": 0}
        for layer in BRANCHES[branch][1]:
            kind = "pool" if layer == "P" else "conv"
            counts[kind] += 1
            name = f"{kind}{counts[kind]}"
            if kind == "pool":
                module, h, w = nn.MaxPool2d(2, 2), h // 2, w // 2
            else:
                module = nn.Sequential(nn.Conv2d(c, next(chans), 3, stride=1, padding=padding, bias=True),
                                       nn.LeakyReLU(LRELU_SLOPE), nn.Dropout2d(CONV_DROPOUT))
                c, h, w = module[0].out_channels, h - 2 + 2 * padding, w - 2 + 2 * padding
            if h < 1 or w < 1:
                raise ValueError(f"{branch} branch: the {r1 - r0}x{c1 - c0} crop at resolution {resolution} "
                                 f"shrinks to nothing at layer {name} (padding {padding}); use padding 1 or a "
                                 f"larger resolution")
            self.add_module(name, module)
            self.order.append(name)
            self.shapes.append((name, c, h, w))
        self.flatten = c * h * w
        self.fc1 = nn.Sequential(nn.Linear(self.flatten, head_units), nn.Tanh(), nn.Dropout(HEAD_DROPOUT))
        self.fc_final = nn.Linear(head_units, len(self.outputs))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Whole images [B, 3, R, R] -> this branch's outputs [B, k]."""
        r0, r1, c0, c1 = self.crop
        x = images[:, :, r0:r1, c0:c1]
        for name in self.order:
            x = getattr(self, name)(x)
        return self.fc_final(self.fc1(x.flatten(1)))


class PropertyScoreCNN(nn.Module):
    """Images [B, 3, R, R] in [-1, 1] -> property scores [B, 7] in :data:`P7` order."""

    REGISTRATION_ORDER = ("eyes", "mouth", "pose", "hair_color", "hair_length", "background")

    def __init__(self, resolution: int = 256, width=1.0, padding: int = 0, head_units: int = HEAD_UNITS):
        super().__init__()
        self.resolution = int(resolution)
        self.config = {"resolution": self.resolution, "width": width, "padding": int(padding),
                       "head_units": int(head_units)}
        for b in self.REGISTRATION_ORDER:
            self.add_module(f"{b}_score_cnn", PropertyBranch(b, resolution, width, padding, head_units))
        where = {}
        for b in self.REGISTRATION_ORDER:
            for j, name in enumerate(BRANCHES[b][2]):
                where[name] = (b, j)
        self._output_index = [where[p] for p in P7]

    def branches(self) -> dict[str, PropertyBranch]:
        return {b: getattr(self, f"{b}_score_cnn") for b in self.REGISTRATION_ORDER}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        r = self.resolution
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, r, r):
            raise ValueError(f"property-score CNN expects images [B, 3, {r}, {r}] in [-1, 1], "
                             f"got {tuple(images.shape)}")
        images = images.to(torch.float32)
        outs = {b: m(images) for b, m in self.branches().items()}
        return torch.cat([outs[b][:, j:j + 1] for b, j in self._output_index], dim=1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def to_signed_nchw(x) -> torch.Tensor:
    """uint8 NCHW -> float32 in [-1, 1] (``ToTensor`` then ``Normalize(0.5, 0.5)``); float input passes through."""
    x = torch.as_tensor(x)
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div(127.5).sub(1.0)
    return x.to(torch.float32)


def load_property_cnn(path, resolution: int = 256, width=1.0, padding: int = 0,
                      head_units: int = HEAD_UNITS) -> PropertyScoreCNN:
    """Strict, ``weights_only`` load of a saved state dict; returned in eval mode with gradients off."""
    model = PropertyScoreCNN(resolution, width, padding, head_units)
    load_state_dict_strict(model, read_checkpoint(path), what=f"property-score CNN {path}")
    return model.eval().requires_grad_(False)


@torch.inference_mode()
def score_images(model: PropertyScoreCNN, images, batch_size: int = 32, progress: bool = False) -> np.ndarray:
    """Scores [N, 7] (float32, P7 order) in eval mode under ``inference_mode``.

    ``images``: anything indexable by a slice giving uint8 NCHW (or float [-1, 1]) batches —
    a tensor, an array, or a lazy loader. The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in tqdm(range(0, len(images), batch_size), desc="property scores", disable=not progress):
            out.append(model(to_signed_nchw(images[i:i + batch_size])).numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, len(P7)), np.float32)


# ------------------------------------------------------------------------------------ training

@dataclass
class PropertyCNNSettings:
    """Architecture and training settings (defaults: spec 04 §3.3)."""
    resolution: int = 256
    width: float | dict = 1.0
    padding: int = 0
    head_units: int = HEAD_UNITS
    lr: float = 5e-5
    weight_decay: float = 0.01
    batch_size: int = 16
    valid_batch_size: int = 4
    valid_fraction: float = 0.1            # train = int(N * (1 - fraction)): 4,703 -> 4,232 / 471
    t_max: int = 10                         # CosineAnnealingLR, stepped once per epoch
    patience: int = 20                      # stop when this many epochs pass without a new best
    max_epochs: int | None = None           # None: the early-stopping rule only (the original)
    seed: int = 0
    selection_exclude: tuple = ("background_std",)   # left out of the early-stopping criterion
    val_log_samples: int = 30               # first N validation images logged per epoch

    def validate(self) -> None:
        if not 0 < self.valid_fraction < 1:
            raise ValueError(f"valid_fraction must be in (0, 1), got {self.valid_fraction}")
        for name in ("batch_size", "valid_batch_size", "t_max", "patience"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1 or None, got {self.max_epochs}")
        unknown = set(self.selection_exclude) - set(P7)
        if unknown:
            raise ValueError(f"selection_exclude names unknown properties {sorted(unknown)}")

    def build(self) -> PropertyScoreCNN:
        return PropertyScoreCNN(self.resolution, self.width, self.padding, self.head_units)

    def to_dict(self) -> dict:
        return asdict(self)


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
