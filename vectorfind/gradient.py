"""Gradient method (spec 02 §4, 02a M17–M20): one MLP per property regresses its score from the
mid vector; a case's direction is the normalised gradient of that MLP at the case's mid vector.

Network (original key names ``fc1.0``, ``fc2.0``, ``fc_final``): Linear(d, 768 + d/4) → Tanh →
Dropout(0.25) → Linear(·, 128 + d/8) → Tanh → Dropout(0.25) → Linear(·, 1).

Training rule (02a M18): all n samples, split int(0.8n) / int(0.1n) / rest (train / valid /
test); batches 16 (train, shuffled) and 4 (valid, test); loss MSE summed per batch; AdamW lr
1e-3 (default weight decay 0.01); ExponentialLR γ 0.95 stepped after each epoch's validation;
training in train mode, validation in eval mode; an epoch improves only if its valid loss
(sum / count) is strictly lower; stop when epoch ≥ max_epochs or epoch − best ≥ 15 (epochs
count from 0, so up to max_epochs + 1 run); the result is a fresh module holding the best
weights. Test MSE is scikit-learn's mean squared error on the test split.

Dropout at use: the original kept the best module in train mode, so its test MSE and every
gradient direction had dropout on. Here eval mode is the default and ``dropout=True`` (seeded)
gives the original's behaviour. Sign: +α·v *increases* the property.

Seeding: "seeded" forks torch's RNG and seeds it (init, split, shuffles, dropout); "original"
uses torch's global RNG as it stands (``seed=None`` = the original's unseeded run).
"""
from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import mean_squared_error
from torch import nn

from .directions import project_out
from .protocols import CONTROLLED

TRAIN_BATCH, EVAL_BATCH = 16, 4
DEFAULTS = dict(lr=1e-3, gamma=0.95, patience=15, max_epochs=1000, weight_decay=0.01)
NN_KEYS = ("fc1.0.weight", "fc1.0.bias", "fc2.0.weight", "fc2.0.bias", "fc_final.weight", "fc_final.bias")


def hidden_sizes(d: int) -> tuple[int, int]:
    return 768 + d // 4, 128 + d // 8


class PropertyMLP(nn.Module):
    """Mid vector [N, d] -> property score [N, 1]."""

    def __init__(self, d: int, dropout: float = 0.25):
        super().__init__()
        h1, h2 = hidden_sizes(d)
        self.d = d
        self.fc1 = nn.Sequential(nn.Linear(d, h1), nn.Tanh(), nn.Dropout(dropout))
        self.fc2 = nn.Sequential(nn.Linear(h1, h2), nn.Tanh(), nn.Dropout(dropout))
        self.fc_final = nn.Linear(h2, 1)

    def forward(self, x):
        return self.fc_final(self.fc2(self.fc1(x)))


def load_mlp(state_dict: dict, d: int | None = None) -> PropertyMLP:
    """A PropertyMLP from a state dict with the original's keys (strict; errors list the keys)."""
    if d is None:
        if "fc1.0.weight" not in state_dict:
            raise KeyError(f"gradient NN state dict lacks 'fc1.0.weight'; keys {sorted(state_dict)[:6]}")
        d = int(state_dict["fc1.0.weight"].shape[1])
    m = PropertyMLP(d)
    missing = [k for k in NN_KEYS if k not in state_dict]
    unexpected = [k for k in state_dict if k not in NN_KEYS]
    if missing or unexpected:
        raise KeyError(f"gradient NN state dict: missing keys {missing}, unexpected keys {unexpected}")
    m.load_state_dict(state_dict, strict=True)
    return m


@contextlib.contextmanager
def _rng_scope(seed: int | None, rng_order: str):
    """Seeded: fork torch's global RNG and seed it; original: use it as it stands."""
    if rng_order == "original":
        if seed is not None:
            torch.manual_seed(int(seed))
        yield
        return
    if seed is None:
        raise ValueError("rng_order 'seeded' needs a seed")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


@dataclass
class MlpFit:
    model: PropertyMLP
    test_mse: float
    best_epoch: int
    epochs: int
    best_valid_loss: float
    seconds: float
    history: list = field(default_factory=list)        # valid loss per epoch


def _batches(n: int, size: int, perm: torch.Tensor | None = None):
    idx = perm if perm is not None else torch.arange(n)
    for s in range(0, n, size):
        yield idx[s:s + size]


def _valid_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    total = 0.0
    with torch.no_grad():
        for b in _batches(len(x), EVAL_BATCH):
            total += float(((model(x[b]).squeeze(1) - y[b]) ** 2).sum())
    return total / max(len(x), 1)


def predict(model: nn.Module, x, dropout: bool = False, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Model output [N] (eval mode unless ``dropout``; the module's mode is restored)."""
    was = model.training
    model.train(bool(dropout))
    try:
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
        with torch.no_grad():
            out = [model(xt[b]).squeeze(1) for b in _batches(len(xt), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros(0, np.float32)
    finally:
        model.train(was)


def train_property_mlp(mid: np.ndarray, target: np.ndarray, *, seed: int | None = 0, rng_order: str = "seeded",
                       dropout_at_test: bool = False, lr: float = DEFAULTS["lr"], gamma: float = DEFAULTS["gamma"],
                       patience: int = DEFAULTS["patience"], max_epochs: int = DEFAULTS["max_epochs"],
                       weight_decay: float = DEFAULTS["weight_decay"], progress=None) -> MlpFit:
    """Train one property's MLP by the original's rule (module docstring)."""
    t0 = time.perf_counter()
    x_all = torch.as_tensor(np.asarray(mid, dtype=np.float32))
    y_all = torch.as_tensor(np.asarray(target, dtype=np.float32).reshape(-1))
    n = len(x_all)
    n_tr, n_va = int(0.8 * n), int(0.1 * n)
    if n_tr < 1 or n_va < 1 or n - n_tr - n_va < 1:
        raise ValueError(f"gradient NN needs >= 10 samples for an 80/10/10 split, got {n}")
    with _rng_scope(seed, rng_order):
        model = PropertyMLP(x_all.shape[1])
        perm = torch.randperm(n)
        tr, va, te = perm[:n_tr], perm[n_tr:n_tr + n_va], perm[n_tr + n_va:]
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=gamma)
        x_tr, y_tr, x_va, y_va = x_all[tr], y_all[tr], x_all[va], y_all[va]
        best, best_epoch, best_state, history = float("inf"), 0, None, []
        epoch = 0
        while True:
            model.train()
            for b in _batches(n_tr, TRAIN_BATCH, torch.randperm(n_tr)):
                opt.zero_grad(set_to_none=True)
                loss = ((model(x_tr[b]).squeeze(1) - y_tr[b]) ** 2).sum()
                loss.backward()
                opt.step()
            model.eval()
            vl = _valid_loss(model, x_va, y_va)
            sched.step()
            history.append(vl)
            if vl < best:
                best, best_epoch, best_state = vl, epoch, copy.deepcopy(model.state_dict())
            if progress is not None:
                progress(epoch, vl, best)
            if epoch >= max_epochs or epoch - best_epoch >= patience:
                break
            epoch += 1
        fresh = PropertyMLP(x_all.shape[1])
        fresh.load_state_dict(best_state, strict=True)
        pred = predict(fresh, x_all[te].numpy(), dropout=dropout_at_test)
    mse = float(mean_squared_error(y_all[te].numpy(), pred))
    return MlpFit(fresh, mse, best_epoch, epoch + 1, best, time.perf_counter() - t0, history)


@dataclass
class GradientNets:
    """One trained MLP per property at one extraction point.

    ``conditional`` (off by default; the original did not do this): local conditioning. A case's
    direction of property p is its MLP gradient at the case's mid vector minus its least-squares
    projection on the gradients, at that same mid vector, of the other controlled properties' MLPs
    held here and of the ``side`` MLPs (e.g. hair colour, hair length, background mean regressed on
    the same samples), then renormalised: to first order the edit leaves those MLPs' read-outs
    unchanged. The SVM's conditional projection does this once per group; here it is per case."""
    point: str
    nets: dict                      # property -> PropertyMLP
    test_mse: dict = field(default_factory=dict)
    side: dict = field(default_factory=dict)       # name -> PropertyMLP, only conditioned on (never edited)
    conditional: bool = False

    def directions(self, mid, properties=None, dropout: bool = False, dropout_seed: int = 0) -> dict:
        """Per-case unit gradient directions (float64) at the unedited mid vector (see
        :func:`gradient_direction`); properties in the order eyes, mouth, pose. With ``conditional``,
        each is projected off the other nets' and the side nets' gradients at the same mid vector."""
        props = [p for p in CONTROLLED if p in (properties or self.nets)]
        seed = lambda p: dropout_seed * 3 + CONTROLLED.index(p)                 # noqa: E731
        if not self.conditional:
            return {p: gradient_direction(self.nets[p], mid, dropout, seed(p)) for p in props}
        own = {p: gradient_direction(self.nets[p], mid, dropout, seed(p)) for p in CONTROLLED if p in self.nets}
        side = [gradient_direction(m, mid, dropout, dropout_seed * 3 + 1000 + i, zero_ok=True)
                for i, m in enumerate(self.side.values())]
        return {p: project_out(own[p], [v for q, v in own.items() if q != p] + [v for v in side if v is not None])
                for p in props}

    def state_dicts(self) -> dict:
        """property -> state dict with the original's keys (what its ``…_nn_{p}.pth`` held)."""
        return {p: m.state_dict() for p, m in self.nets.items()}

    @classmethod
    def from_state_dicts(cls, point: str, state_dicts: dict, test_mse: dict | None = None) -> "GradientNets":
        return cls(point, {p: load_mlp(sd) for p, sd in state_dicts.items()}, dict(test_mse or {}))


def train_gradient_nets(samples, point: str | None = None, properties=CONTROLLED, *, seed: int | None = 0,
                        rng_order: str = "seeded", **kw) -> GradientNets:
    """Train one MLP per property on one shared sampling (02a M17), eyes, mouth, pose in turn."""
    nets, mse = {}, {}
    for i, p in enumerate(properties):
        s = None if seed is None else int(seed) * 10 + CONTROLLED.index(p)
        fit = train_property_mlp(samples.mid, samples.scores[p], seed=s, rng_order=rng_order, **kw)
        nets[p], mse[p] = fit.model, fit.test_mse
    return GradientNets(point or samples.point, nets, mse)


def gradient_direction(model: nn.Module, mid, dropout: bool = False, dropout_seed: int = 0,
                       zero_ok: bool = False) -> np.ndarray | None:
    """∂model/∂mid at one mid vector [d] (or [1, d]), divided by its L2 norm -> float64 [d].

    A new detached float32 leaf per call, so nothing accumulates across properties. With
    ``dropout`` the model runs in train mode (the original) under a seeded fork of torch's RNG."""
    m = np.asarray(mid.detach().cpu() if isinstance(mid, torch.Tensor) else mid, dtype=np.float32).reshape(1, -1)
    was = model.training
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(dropout_seed))
            model.train(bool(dropout))
            leaf = torch.from_numpy(m.copy()).requires_grad_(True)
            with torch.enable_grad():
                model(leaf).sum().backward()
    finally:
        model.train(was)
    g = leaf.grad.numpy().reshape(-1)
    norm = np.linalg.norm(g)
    if not norm > 0:
        if zero_ok:
            return None
        raise ValueError("gradient is zero at this mid vector; no direction")
    return (g / norm).astype(np.float64)
