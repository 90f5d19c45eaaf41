"""FineTune-v1 (and v4: the same loop with the three labels eyes / mouth / pose), spec 04 §2, §6.

One training step (``train_step``), as the original:

1. D phase: fakes ``G(z, y_fake)`` (no gradient), then one D update on
   ``mean softplus(D(fake, y_fake)) + mean softplus(-D(real, y)) + (gamma / 2) * R1``
   (R1 = batch mean of |dD(real, y) / d real|^2, gamma 10); only D's last three layers train.
2. G phase: up to ``g_max_updates`` (4) G updates on ``mean softplus(-D(G(z, y_fake), y_fake))``,
   fresh z each, stopping as soon as L_G < ``g_ratio`` (2) * L_D; only G's mapping trains.

Options that restore the original (defaults first):

* ``fake_labels``: ``"dataset"`` — fake labels are rows of the label table drawn uniformly,
  independently of the real batch (so D sees the label distribution, not the batch's pairing);
  ``"real"`` — the real batch's labels (the original, defect D11); ``"normal"`` — N(0, 1).
* ``style_mixing_prob`` 0 (original 0.9) and ``randomize_noise`` False (original True): seeded
  from the step's generator.
* ``dense0`` / ``label_weight`` / ``head``: how the label path starts (``stylegan_modified.loading``;
  ``"reinit"`` / ``"fresh"`` / ``"reinit"`` = the original's random restart).
* learning rates: ``lr_generator`` for the mapping's dense layers, ``lr_label`` for
  ``label_weight``, ``lr_discriminator`` (original 1e-4 for all).

Everything random comes from generators seeded by (seed, epoch, step, purpose), drawn for the
global batch (each process takes its rows), so a resumed run and an N-process run (torchrun,
:mod:`stylegan_modified.distributed`) draw what a single uninterrupted run draws.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from stylegan_modified.conditional import ConditionalDiscriminator, ConditionalGenerator
from stylegan_modified.distributed import DistContext, step_generator
from stylegan_modified.training_parts import make_optimizers, parameter_groups

FAKE_LABEL_MODES = ("dataset", "real", "normal")
LOG_COLUMNS = ["epoch", "idx", "d_loss", "g_loss", "g_train_count", "real_scores_mean", "fake_scores_mean",
               "real_fake_auroc"]


@dataclass
class GanSettings:
    version: str = "v1"                      # "v1" (7 labels) or "v4" (eyes, mouth, pose)
    epochs: int = 2
    batch_size: int = 16                     # global batch (all processes together)
    lr_generator: float = 1e-4               # mapping dense layers (stored weights carry lr_mul 0.01)
    lr_label: float = 1e-4                   # label_weight (unscaled)
    lr_discriminator: float = 1e-4
    r1_gamma: float = 10.0
    g_max_updates: int = 4
    g_ratio: float = 2.0
    fake_labels: str = "dataset"
    style_mixing_prob: float = 0.0
    randomize_noise: bool = False
    w_moving_decay: float = 0.995
    mbstd_group: int = 16
    drop_last: bool = True                   # drop an incomplete last batch (minibatch-std needs divisible groups)
    dense0: str = "keep"                     # "keep", "regress" (label path from the read-out directions) or "reinit"
    regress_labels: str = "eyes,mouth,pose"   # dense0='regress': the labels whose read-out the label sets
    label_weight: str = "auto"
    head: str = "keep"
    seed: int = 0
    log_every: int = 10                      # train_log.csv cadence (every batch with idx < 10 in epoch 0 too)
    checkpoint_every: int = 50               # steps between resumable training states
    grid_z: int = 10
    max_steps_per_epoch: int | None = None   # cap on the steps of an epoch (smoke runs, tests); None: the whole set

    def validate(self) -> None:
        if self.version not in ("v1", "v4"):
            raise ValueError(f"version must be 'v1' or 'v4', got {self.version!r}")
        if self.dense0 not in ("keep", "regress", "reinit"):
            raise ValueError(f"dense0 must be 'keep', 'regress' or 'reinit', got {self.dense0!r}")
        if self.fake_labels not in FAKE_LABEL_MODES:
            raise ValueError(f"fake_labels must be one of {FAKE_LABEL_MODES}, got {self.fake_labels!r}")
        for k in ("epochs", "batch_size", "g_max_updates", "log_every", "checkpoint_every"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if not 0.0 <= self.style_mixing_prob <= 1.0:
            raise ValueError(f"style_mixing_prob must be in [0, 1], got {self.style_mixing_prob}")


class DiscriminatorLoss(nn.Module):
    """D's whole loss in one forward (real and fake scores, R1), so one DDP forward / backward."""

    def __init__(self, d: ConditionalDiscriminator, r1_gamma: float):
        super().__init__()
        self.d = d
        self.r1_gamma = float(r1_gamma)

    def forward(self, real, y_real, fake, y_fake):
        real = real.detach().requires_grad_(self.r1_gamma > 0)
        rs = self.d(real, y_real)
        fs = self.d(fake.detach(), y_fake)
        loss = F.softplus(fs).mean() + F.softplus(-rs).mean()
        r1 = torch.zeros((), device=real.device)
        if self.r1_gamma > 0:
            grad, = torch.autograd.grad(rs.sum(), real, create_graph=True)
            r1 = grad.pow(2).flatten(1).sum(1).mean()
            loss = loss + 0.5 * self.r1_gamma * r1
        return loss, rs.detach(), fs.detach(), r1.detach()


class GeneratorLoss(nn.Module):
    """G's non-saturating loss through a given D (D is an argument, not a submodule)."""

    def __init__(self, g: ConditionalGenerator):
        super().__init__()
        self.g = g

    def forward(self, z, y, d, style_mixing_prob: float, randomize_noise: bool, w_moving_decay: float,
                generator: torch.Generator | None):
        image = self.g(z, y, style_mixing_prob=style_mixing_prob, randomize_noise=randomize_noise,
                       w_moving_decay=w_moving_decay, generator=generator)["image"]
        return F.softplus(-d(image, y)).mean()


class GanTrainer:
    """Holds G, D, their optimisers and loss modules (DDP-wrapped with several processes)."""

    def __init__(self, g: ConditionalGenerator, d: ConditionalDiscriminator, labels: np.ndarray, s: GanSettings,
                 ctx: DistContext):
        self.g, self.d, self.s, self.ctx = g, d, s, ctx
        self.labels = torch.from_numpy(np.asarray(labels, np.float32))
        groups = parameter_groups(s.version, generator=g, discriminator=d,
                                  lr={"generator": s.lr_generator, "label_weight": s.lr_label,
                                      "discriminator": s.lr_discriminator})
        self.opts = make_optimizers(groups)
        self.g_params = [p for grp in groups["generator"] for p in grp["params"]]
        self.d_loss = ctx.wrap(DiscriminatorLoss(d, s.r1_gamma))
        self.g_loss = ctx.wrap(GeneratorLoss(g))

    def _fake_labels(self, gen: torch.Generator, b_global: int, y_real: torch.Tensor) -> torch.Tensor:
        if self.s.fake_labels == "real":
            return y_real
        if self.s.fake_labels == "normal":
            y = torch.randn((b_global, self.labels.shape[1]), generator=gen)
        else:
            y = self.labels[torch.randint(0, len(self.labels), (b_global,), generator=gen)]
        return self.ctx.local_rows(y).to(self.ctx.device)

    def _z(self, gen: torch.Generator, b_global: int) -> torch.Tensor:
        return self.ctx.local_rows(torch.randn((b_global, self.g.cfg.z_dim), generator=gen)).to(self.ctx.device)

    def train_step(self, x_real: torch.Tensor, y_real: torch.Tensor, epoch: int, step: int) -> dict:
        s, ctx = self.s, self.ctx
        b_global = x_real.shape[0] * ctx.world
        self.g.train()
        self.d.train()
        # 1. D phase
        gen = step_generator(s.seed, epoch, step, 0)
        z, y_fake = self._z(gen, b_global), self._fake_labels(gen, b_global, y_real)
        mix_gen = step_generator(s.seed, epoch, step, 100)
        with torch.no_grad():
            fake = self.g(z, y_fake, style_mixing_prob=s.style_mixing_prob, randomize_noise=s.randomize_noise,
                          w_moving_decay=s.w_moving_decay, generator=mix_gen)["image"]
        loss_d, rs, fs, r1 = self.d_loss(x_real, y_real, fake, y_fake)
        self.opts["discriminator"].zero_grad(set_to_none=True)
        loss_d.backward()
        self.opts["discriminator"].step()
        d_loss = float(ctx.mean(loss_d))
        # 2. G phase: up to g_max_updates while L_G >= g_ratio * L_D
        count, g_loss = 0, float("nan")
        while count < s.g_max_updates:
            gen = step_generator(s.seed, epoch, step, 1 + count)
            z, y_fake = self._z(gen, b_global), self._fake_labels(gen, b_global, y_real)
            loss_g = self.g_loss(z, y_fake, self.d, s.style_mixing_prob, s.randomize_noise, s.w_moving_decay,
                                 step_generator(s.seed, epoch, step, 101 + count))
            self.opts["generator"].zero_grad(set_to_none=True)
            loss_g.backward(inputs=self.g_params)
            self.opts["generator"].step()
            count += 1
            g_loss = float(ctx.mean(loss_g))
            if g_loss < s.g_ratio * d_loss:
                break
        rs_all, fs_all = ctx.gather(rs.reshape(-1)), ctx.gather(fs.reshape(-1))
        scores = torch.cat([rs_all, fs_all]).numpy()
        truth = np.r_[np.ones(len(rs_all)), np.zeros(len(fs_all))]
        return {"epoch": int(epoch), "idx": int(step), "d_loss": d_loss, "g_loss": g_loss, "g_train_count": count,
                "real_scores_mean": float(rs_all.mean()), "fake_scores_mean": float(fs_all.mean()),
                "real_fake_auroc": float(roc_auc_score(truth, scores)), "r1": float(ctx.mean(r1))}

    def end_epoch(self, epoch: int) -> dict:
        return {}

    def progress(self, row: dict) -> dict:
        return {"d": f"{row['d_loss']:.3f}", "g": f"{row['g_loss']:.3f}", "n": row["g_train_count"],
                "auc": f"{row['real_fake_auroc']:.3f}"}

    def models(self) -> dict:
        return {"generator": self.g, "discriminator": self.d}

    def state(self) -> dict:
        return {"generator": self.g.state_dict(), "discriminator": self.d.state_dict(),
                "opt_generator": self.opts["generator"].state_dict(),
                "opt_discriminator": self.opts["discriminator"].state_dict()}

    def load(self, st: dict) -> None:
        self.g.load_state_dict(st["generator"])
        self.d.load_state_dict(st["discriminator"])
        self.opts["generator"].load_state_dict(st["opt_generator"])
        self.opts["discriminator"].load_state_dict(st["opt_discriminator"])


def log_rows(history: list, log_every: int) -> pd.DataFrame:
    """The original's ``train_log.csv`` rows: every ``log_every``-th batch, and every batch with
    idx < 10 in epoch 0; values rounded to 4."""
    rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items() if k in LOG_COLUMNS}
            for h in history if h["idx"] % log_every == 0 or (h["epoch"] == 0 and h["idx"] < 10)]
    return pd.DataFrame(rows, columns=LOG_COLUMNS)


def settings_dict(s: GanSettings) -> dict:
    return asdict(s)


def timing(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0
