"""FineTune-v3: the conditional-VAE trainer (spec 04 §5.2–5.4), run by :mod:`training.loop`.

Per batch (x, label): ``mu, logvar = E(x, label)``, ``z = mu + eps * sigma``, ``x_gen = G_v3(z, label_G)``,
``p = property CNN(x_gen)``, ``g = gender CNN(x_gen)``; the loss is

    C + G + 0.2 M + 0.05 V     C = mean of the MSEs of p vs label_G at eyes, mouth, pose
                               G = MSE(g, 1)   M = mean mu^2   V = mean logvar^2

(weights are settings). One AdamW with the groups: mapping dense layers (lr 1e-4), the
unscaled ``label_weight`` (``lr_label``), encoder (1e-5); cosine schedule stepped per epoch.
Only G's mapping and the encoder train; both CNNs are frozen loss networks.

Options (defaults first; the original's behaviour is always one of them):

* ``gen_labels``: ``"image"`` — label_G = the image's own label (the original); ``"shuffled"``
  — with probability ``gen_label_prob`` per sample, the eyes / mouth / pose of label_G are
  taken from other images, each from its own random image (decorrelated, the data's marginals);
  ``"box"`` — drawn uniformly from ``label_box`` (covers the generation test's grid and its tails).
  The encoder always sees the image's own label.
* ``loss_cnn_mode``: ``"eval"`` or ``"train"`` (the original: dropout active in both loss
  networks, seeded per step).
* ``gender_input``: ``"unit"`` ((x + 1) / 2, the range the stage-2 CNNs were trained on) or
  ``"signed"`` (the original's raw [-1, 1], defect D8); ``gender_folds`` ``"mean"`` (the K-fold
  mean) or ``"fold0"`` (the original).
* ``reconstruction``: adds ``weight_reconstruction * MSE(G(z, label), x)`` and
  ``weight_kl * KL(q(z|x) || N(0, I))`` (mean per dimension) — a real CVAE objective, which the
  original lacks (defect D9).
* ``identity_weight`` > 0 (with ``gen_labels`` other than "image"): the property CNN's
  non-controlled outputs (hair colour / length, background mean / std) of G(z, label_G) are
  pulled to those of G(z, label) (detached), so changing eyes / mouth / pose keeps the rest.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.vocabulary import CONTROLLED as P3
from pipeline.vocabulary import PROPERTIES as P7
from stylegan_modified.cvae import FineTuneV3
from stylegan_modified.distributed import DistContext, step_generator, step_seed
from stylegan_modified.training_parts import make_optimizers, parameter_groups

from .loop import epoch_means

GEN_LABEL_MODES = ("image", "shuffled", "box")
P3_IDX = [P7.index(p) for p in P3]
OTHER_IDX = [i for i in range(len(P7)) if i not in P3_IDX]
# the original's column order: the seven *_mse columns, then the seven *_abs columns (spec 04)
LOG_COLUMNS = (["epoch", "batch_idx", "total_loss", "mse", "gender_loss", "mu_loss", "logvar_loss"]
               + [f"{p}_{k}" for k in ("mse", "abs")
                  for p in ("eyes", "hair_color", "hair_length", "mouth", "pose", "back_mean", "back_std")])
KEPT_POSTERIORS = 100          # posteriors of the last batches kept for test_z_source 'last_batches'

SHORT = dict(zip(P7, ("eyes", "hair_color", "hair_length", "mouth", "pose", "back_mean", "back_std")))


@dataclass
class V3Settings:
    epochs: int = 10
    batch_size: int = 8                      # global batch
    lr_generator: float = 1e-4               # mapping dense layers (stored weights carry lr_mul 0.01)
    lr_label: float = 1e-4                   # label_weight (unscaled)
    lr_encoder: float = 1e-5
    t_max: int = 10                          # CosineAnnealingLR, stepped once per epoch
    weight_property: float = 1.0
    weight_gender: float = 1.0
    weight_mu: float = 0.2
    weight_logvar: float = 0.05
    reconstruction: bool = False
    weight_reconstruction: float = 1.0
    weight_kl: float = 0.05
    identity_weight: float = 0.0
    gen_labels: str = "image"
    gen_label_prob: float = 1.0
    prior_z_fraction: float = 0.0            # share of samples whose z is drawn from N(0, I) instead of the encoder
    label_box: str = "-2.2,2.2;-1.6,2.0;-1.6,4.0"   # eyes; mouth; pose ranges for gen_labels='box'
    loss_cnn_mode: str = "eval"
    gender_input: str = "unit"
    gender_folds: str = "mean"
    init_from: str = "v1"                    # "v1" (the finished FineTune-v1, the original) or "base"
    dense0: str = "keep"                     # "keep" (copy the source's z columns), "regress" (label path from
    #                                          the read-out directions, see loading.regress_label_path) or
    #                                          "reinit" (the original's random first layer)
    regress_labels: str = "eyes,mouth,pose"   # dense0='regress': the labels whose read-out the label sets
    seed: int = 0
    test_z_source: str = "images"            # "images" (30 seeded training images' posteriors at the epoch's
    #                                          end), "last_batches" (the original), "prior" (seeded N(0, I))
    test_dropout: bool = False               # True: the original's dropout-on property-CNN judge
    select_judge: str = "primary"            # the shipped epoch: most passing z, then mean r, by "primary" (the
    #                                          property CNN, the original) or "parsing" (stages 3-4 as a judge,
    #                                          segmentation.parsing_judge: the generator never trained against it)
    log_every: int = 20
    checkpoint_every: int = 100
    max_steps_per_epoch: int | None = None

    def validate(self) -> None:
        checks = {"gen_labels": GEN_LABEL_MODES, "loss_cnn_mode": ("eval", "train"),
                  "gender_input": ("unit", "signed"), "gender_folds": ("mean", "fold0"),
                  "init_from": ("v1", "base"), "dense0": ("keep", "regress", "reinit"),
                  "test_z_source": ("images", "last_batches", "prior"), "select_judge": ("primary", "parsing")}
        for k, allowed in checks.items():
            if getattr(self, k) not in allowed:
                raise ValueError(f"{k} must be one of {allowed}, got {getattr(self, k)!r}")
        for k in ("epochs", "batch_size", "t_max", "log_every", "checkpoint_every"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        for k in ("gen_label_prob", "prior_z_fraction"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ValueError(f"{k} must be in [0, 1], got {getattr(self, k)}")
        self.box()

    def box(self) -> np.ndarray:
        """``label_box`` as [3, 2] (low, high) for eyes, mouth, pose."""
        try:
            b = np.array([[float(v) for v in part.split(",")] for part in self.label_box.split(";")], np.float32)
        except ValueError as exc:
            raise ValueError(f"label_box must look like 'lo,hi;lo,hi;lo,hi', got {self.label_box!r}") from exc
        if b.shape != (3, 2) or (b[:, 1] <= b[:, 0]).any():
            raise ValueError(f"label_box needs three increasing (lo, hi) pairs, got {self.label_box!r}")
        return b


class V3Loss(nn.Module):
    """The whole v3 loss in one forward (one DDP forward / backward per step)."""

    def __init__(self, model: FineTuneV3, s: V3Settings):
        super().__init__()
        self.model = model
        self.s = s

    def forward(self, x, y, y_gen, eps, dropout_seed: int, z_prior=None):
        """``z_prior`` [B, z_dim] with NaN rows: the rows that are not NaN replace the posterior draw
        (``prior_z_fraction``)."""
        s, m = self.s, self.model
        cnns = [c for c in (m.property_score_cnn, m.gender_cnn) if c is not None]
        for c in cnns:
            c.train(s.loss_cnn_mode == "train")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(dropout_seed)
            mu, logvar = m.CVAE_encoder(x, y)
            z = mu + eps * torch.exp(0.5 * logvar)
            if z_prior is not None:
                z = torch.where(torch.isnan(z_prior), z, torch.nan_to_num(z_prior))
            image = m.stylegan_generator(z, y_gen, style_mixing_prob=0.0, randomize_noise=False)["image"]
            out = {"z": z, "image": image, **m.judge(image)}
            p, gnd = out["property"], out["gender"]
            per_mse = ((p - y_gen) ** 2).mean(dim=0)
            parts = {"mse": per_mse[P3_IDX].mean(), "gender_loss": F.mse_loss(gnd, torch.ones_like(gnd)),
                     "mu_loss": mu.pow(2).mean(), "logvar_loss": logvar.pow(2).mean()}
            total = (s.weight_property * parts["mse"] + s.weight_gender * parts["gender_loss"]
                     + s.weight_mu * parts["mu_loss"] + s.weight_logvar * parts["logvar_loss"])
            same = y_gen is y
            rec_img = out["image"] if same else None
            if s.reconstruction and rec_img is None:
                rec_img = m.stylegan_generator(out["z"], y, style_mixing_prob=0.0)["image"]
            elif s.identity_weight > 0 and rec_img is None:
                with torch.no_grad():
                    rec_img = m.stylegan_generator(out["z"], y, style_mixing_prob=0.0, w_moving_decay=1.0)["image"]
            if s.reconstruction:
                per = ((rec_img - x) ** 2).mean(dim=(1, 2, 3))
                post = torch.isnan(z_prior[:, 0]) if z_prior is not None else torch.ones_like(per, dtype=torch.bool)
                parts["reconstruction_loss"] = per[post].mean() if post.any() else per.sum() * 0.0
                parts["kl_loss"] = (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).mean()
                total = total + s.weight_reconstruction * parts["reconstruction_loss"] + s.weight_kl * parts["kl_loss"]
            if s.identity_weight > 0 and not same:
                with torch.no_grad():
                    ref = m.property_score_cnn(rec_img.detach())[:, OTHER_IDX]
                parts["identity_loss"] = F.mse_loss(p[:, OTHER_IDX], ref)
                total = total + s.identity_weight * parts["identity_loss"]
        for c in cnns:
            c.eval()
        parts["total_loss"] = total
        return total, {k: v.detach() for k, v in parts.items()}, (p - y_gen).detach(), mu.detach(), logvar.detach()


class V3Trainer:
    def __init__(self, model: FineTuneV3, labels: np.ndarray, s: V3Settings, ctx: DistContext):
        self.model, self.s, self.ctx = model, s, ctx
        self.labels = torch.from_numpy(np.asarray(labels, np.float32))
        groups = parameter_groups("v3", generator=model.stylegan_generator, encoder=model.CVAE_encoder,
                                  lr={"generator": s.lr_generator, "label_weight": s.lr_label,
                                      "encoder": s.lr_encoder})
        self.opt = make_optimizers(groups)["cvae"]
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=s.t_max, eta_min=0.0)
        self.loss = ctx.wrap(V3Loss(model, s))
        self.box = torch.from_numpy(s.box())
        self.epoch_rows: list = []          # this epoch's step rows (for the per-epoch means)
        self.last_posteriors: list = []     # (mu, logvar) of the first sample of each recent batch

    def gen_labels(self, y: torch.Tensor, gen: torch.Generator, b_global: int) -> torch.Tensor:
        """The generator's labels for a batch (see the module docstring); global draws, local rows."""
        s = self.s
        if s.gen_labels == "image" or s.gen_label_prob == 0:
            return y
        n = len(self.labels)
        if s.gen_labels == "shuffled":
            idx = torch.randint(0, n, (b_global, len(P3_IDX)), generator=gen)
            new = torch.stack([self.labels[idx[:, k], j] for k, j in enumerate(P3_IDX)], dim=1)
        else:
            u = torch.rand((b_global, len(P3_IDX)), generator=gen)
            new = self.box[:, 0] + u * (self.box[:, 1] - self.box[:, 0])
        take = torch.rand((b_global, 1), generator=gen) < s.gen_label_prob
        new, take = self.ctx.local_rows(new).to(y), self.ctx.local_rows(take).to(y.device)
        out = y.clone()
        out[:, P3_IDX] = torch.where(take, new, y[:, P3_IDX])
        return out

    def train_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int) -> dict:
        s, ctx = self.s, self.ctx
        self.model.CVAE_encoder.train()
        self.model.stylegan_generator.train()
        b_global = x.shape[0] * ctx.world
        gen = step_generator(s.seed, epoch, step, 0)
        eps = ctx.local_rows(torch.randn((b_global, self.model.CVAE_encoder.z_dim), generator=gen)).to(x)
        y_gen = self.gen_labels(y, gen, b_global)
        z_prior = None
        if s.prior_z_fraction > 0:
            zp = torch.randn((b_global, self.model.CVAE_encoder.z_dim), generator=gen)
            zp[torch.rand(b_global, generator=gen) >= s.prior_z_fraction] = float("nan")
            z_prior = ctx.local_rows(zp).to(x)
        total, parts, diff, mu, logvar = self.loss(x, y, y_gen, eps,
                                                   step_seed(s.seed, epoch, step, 7) % (2 ** 31) + ctx.rank, z_prior)
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.opt.step()
        row = {"epoch": int(epoch), "batch_idx": int(step), "n": int(b_global)}
        for k, v in parts.items():
            row[k] = float(ctx.mean(v))
        sq, ab = ctx.mean((diff ** 2).mean(dim=0)), ctx.mean(diff.abs().mean(dim=0))
        for j, p in enumerate(P7):
            row[f"{SHORT[p]}_mse"], row[f"{SHORT[p]}_abs"] = float(sq[j]), float(ab[j])
        self.epoch_rows.append(row)
        self.last_posteriors = (self.last_posteriors + [(mu[:1].cpu(), logvar[:1].cpu())])[-KEPT_POSTERIORS:]
        return row

    def end_epoch(self, epoch: int) -> dict:
        """Steps the cosine schedule; returns the epoch's means of the step figures (weighted by batch size)."""
        self.sched.step()
        figures = epoch_means(self.epoch_rows, epoch) if self.epoch_rows else {}
        self.epoch_rows = []
        return figures

    def progress(self, row: dict) -> dict:
        return {"loss": f"{row['total_loss']:.3f}", "mse": f"{row['mse']:.3f}", "gender": f"{row['gender_loss']:.3f}"}

    def models(self) -> dict:
        return {"generator": self.model.stylegan_generator, "encoder": self.model.CVAE_encoder}

    def state(self) -> dict:
        return {"generator": self.model.stylegan_generator.state_dict(),
                "encoder": self.model.CVAE_encoder.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "epoch_rows_json": json.dumps(self.epoch_rows)}

    def load(self, st: dict) -> None:
        self.model.stylegan_generator.load_state_dict(st["generator"])
        self.model.CVAE_encoder.load_state_dict(st["encoder"])
        self.opt.load_state_dict(st["optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        self.epoch_rows = json.loads(st.get("epoch_rows_json", "[]"))
