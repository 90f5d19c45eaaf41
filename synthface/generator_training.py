"""Training the synthface default "original" generator: G(z) ~ render(P(z)).

The generator is the project's StyleGAN class in the synthface profile's
configuration. It is fitted by regression to the procedural renderer:

* L1 between G(z) and render(truth(z)), weighted up on the small facial features
  (eyes, eyebrows, lips, inner mouth: ``FEATURE_WEIGHT``) which otherwise come last;
* an auxiliary linear head predicting the (standardised) world parameters from w.
  It gives the mapping network a direct signal to learn P(z) but would make every
  parameter linearly readable from w, so its weight decays to zero after a warm-up
  (``aux_until`` fraction of the steps) and the head is not part of the shipped model;
* an exponential moving average of G's weights (the shipped weights);
* finally a short phase that trains the matching discriminator (real = renders,
  fake = the EMA generator) with the logistic loss and R1, so fine-tuning stages can
  start from a pre-trained D as the original did.

Everything is seeded; the loop checkpoints every ``ckpt_every`` steps and resumes.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.io import atomic_write_json
from pipeline.reports import save_figure
from stylegan import DiscriminatorConfig, GeneratorConfig, StyleGANDiscriminator, StyleGANGenerator
from stylegan.checkpoint import read_checkpoint, save_checkpoint
from stylegan.generator import to_signed_tensor

FEATURE_CLASSES = (2, 3, 4, 5, 7, 8, 9)   # eyebrows, eyes, lips, inner mouth


@dataclass
class TrainSettings:
    mapping_warmup_steps: int = 3000   # phase 0: mapping + aux head only, fitted to truth(z) (no rendering)
    warmup_batch_size: int = 256
    warmup_lr_boost: float = 3000.0    # equalised-lr mapping weights move ~0.2 %/step at lr 2e-3 (ISSUES.md #5)
    steps: int = 6000                  # phase 1: image regression
    batch_size: int = 16               # 16 is ~2x faster per image than 32 on 2 cores (cache)
    lr: float = 2e-3
    mapping_lr_boost: float = 1000.0   # the mapping keeps learning P(z) during the regression (ISSUES.md #4, #5)
    feature_weight: float = 6.0
    aux_weight: float = 0.5
    aux_until: float = 0.5             # fraction of steps after which the aux head's weight is 0
    ema_decay: float = 0.999
    d_steps: int = 400                 # discriminator phase after the regression phase
    d_lr: float = 1e-3
    r1_gamma: float = 10.0
    seed: int = 0
    ckpt_every: int = 100
    log_every: int = 10
    threads: int = 2
    extra: dict = field(default_factory=dict)


class AuxHead(nn.Module):
    def __init__(self, w_dim: int, n_out: int):
        super().__init__()
        self.fc = nn.Linear(w_dim, n_out)

    def forward(self, w):
        return self.fc(w)


def _weight_map(mask: np.ndarray, feature_weight: float) -> torch.Tensor:
    m = np.isin(mask, FEATURE_CLASSES)
    # dilate a little so edges of the features count too
    t = torch.from_numpy(m.astype(np.float32)).unsqueeze(1)
    t = F.max_pool2d(t, 5, stride=1, padding=2)
    return 1.0 + (feature_weight - 1.0) * t


class RenderSource:
    """Seeded batches (z, target image in [-1, 1], mask, standardised parameters)."""

    def __init__(self, world, render_batch, z_dim: int):
        self.world = world
        self.render_batch = render_batch
        self.z_dim = z_dim
        z = np.random.default_rng(12345).standard_normal((4096, z_dim), dtype=np.float32)
        p = self.param_matrix(z)
        self.p_mean, self.p_std = p.mean(0), p.std(0) + 1e-6

    def param_matrix(self, z: np.ndarray) -> np.ndarray:
        t = self.world.truth(z)
        cols = self.world.numeric_columns() if hasattr(self.world, "numeric_columns") else list(t.columns)
        return np.asarray(t[cols], dtype=np.float32)

    def params_batch(self, step: int, batch_size: int):
        """(z, standardised parameters) without rendering, for the mapping warm-up."""
        z = np.random.default_rng([2, step]).standard_normal((batch_size, self.z_dim), dtype=np.float32)
        return torch.from_numpy(z), torch.from_numpy((self.param_matrix(z) - self.p_mean) / self.p_std)

    def batch(self, step: int, batch_size: int, stream: int = 0):
        z = np.random.default_rng([stream, step]).standard_normal((batch_size, self.z_dim), dtype=np.float32)
        params = self.world.truth(z)
        rgb, mask = self.render_batch(params)
        p = (self.param_matrix(z) - self.p_mean) / self.p_std
        return torch.from_numpy(z), to_signed_tensor(rgb), mask, torch.from_numpy(p)


def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1.0 - decay)
        for be, bm in zip(ema.buffers(), model.buffers()):
            be.copy_(bm)


def train_default_generator(profile, source: RenderSource, out_dir: Path, s: TrainSettings,
                            show_progress: bool = True, stop_after: int | None = None) -> dict:
    """Run (or resume) the training; ``stop_after`` ends this call after that global step
    (with a checkpoint), as an interruption would; calling again resumes."""
    torch.set_num_threads(s.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    gcfg = GeneratorConfig.from_dict(profile["generator"])
    dcfg = DiscriminatorConfig.from_dict(profile["discriminator"])
    torch.manual_seed(s.seed)
    g = StyleGANGenerator(gcfg).train()
    g_ema = copy.deepcopy(g).eval().requires_grad_(False)
    d = StyleGANDiscriminator(dcfg).train()
    n_par = source.p_mean.shape[0]
    aux = AuxHead(gcfg.w_dim, n_par)
    map_params = list(g.mapping.parameters())
    other = [p for n, p in g.named_parameters() if not n.startswith("mapping.")]
    opt_g = torch.optim.Adam([{"params": other, "lr": s.lr},
                              {"params": map_params, "lr": s.lr * s.mapping_lr_boost},
                              {"params": aux.parameters(), "lr": s.lr}], betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(d.parameters(), lr=s.d_lr, betas=(0.0, 0.99))
    opt_w = torch.optim.Adam([{"params": map_params, "lr": s.lr * s.warmup_lr_boost},
                              {"params": aux.parameters(), "lr": s.lr}], betas=(0.0, 0.99))
    state_path = out_dir / "train_state.pth"
    log: list[dict] = []
    step = 0
    if state_path.is_file():
        st = read_checkpoint(state_path)
        g.load_state_dict(st["generator"]); g_ema.load_state_dict(st["generator_smooth"])
        d.load_state_dict(st["discriminator"]); aux.load_state_dict(st["aux"])
        opt_g.load_state_dict(st["opt_g"]); opt_d.load_state_dict(st["opt_d"]); opt_w.load_state_dict(st["opt_w"])
        step = int(st["step"])
        log = json.loads((out_dir / "train_log.json").read_text()) if (out_dir / "train_log.json").is_file() else []

    def checkpoint():
        save_checkpoint({"generator": g.state_dict(), "generator_smooth": g_ema.state_dict(),
                         "discriminator": d.state_dict(), "aux": aux.state_dict(),
                         "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "opt_w": opt_w.state_dict(),
                         "step": torch.tensor(step)}, state_path)
        atomic_write_json(out_dir / "train_log.json", log)

    warm = s.mapping_warmup_steps
    total = warm + s.steps + s.d_steps
    bar = tqdm(total=total, initial=step, desc="synthface G", disable=not show_progress)
    t_last = time.perf_counter()
    end = total if stop_after is None else min(total, stop_after)
    while step < end:
        if step < warm:
            z, p = source.params_batch(step, s.warmup_batch_size)
            l_aux = F.mse_loss(aux(g.mapping(z)["w"]), p)
            opt_w.zero_grad(set_to_none=True)
            l_aux.backward()
            opt_w.step()
            _ema_update(g_ema, g, 0.0)          # EMA starts from the warmed-up mapping
            rec = {"step": step, "warmup_aux": l_aux.item()}
        elif step < warm + s.steps:
            z, target, mask, p = source.batch(step, s.batch_size)
            wmap = _weight_map(mask, s.feature_weight)
            res = g(z, style_mixing_prob=0.0, w_moving_decay=0.995)
            l1 = ((res["image"] - target).abs() * wmap).mean() / wmap.mean()
            aux_w = s.aux_weight * max(0.0, 1.0 - (step - warm) / max(1.0, s.aux_until * s.steps))
            l_aux = F.mse_loss(aux(res["w"]), p)
            loss = l1 + aux_w * l_aux
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
            decay = min(s.ema_decay, (1 + step - warm) / (10 + step - warm))
            _ema_update(g_ema, g, decay)
            rec = {"step": step, "l1": l1.item(), "aux": l_aux.item(), "aux_weight": aux_w}
        else:
            z, real, _, _ = source.batch(step, s.batch_size, stream=1)
            with torch.no_grad():
                fake = g_ema(z)["image"]
            real = real.requires_grad_(True)
            d_real, d_fake = d(real), d(fake)
            grad, = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            r1 = grad.pow(2).sum(dim=(1, 2, 3)).mean()
            l_d = F.softplus(d_fake).mean() + F.softplus(-d_real).mean() + 0.5 * s.r1_gamma * r1
            opt_d.zero_grad(set_to_none=True)
            l_d.backward()
            opt_d.step()
            rec = {"step": step, "d_loss": l_d.item(), "r1": r1.item(),
                   "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item()}
        step += 1
        now = time.perf_counter()
        rec["seconds"] = now - t_last
        t_last = now
        if step % s.log_every == 0 or step == total:
            log.append(rec)
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in rec.items() if k in ("l1", "aux", "d_loss")})
        if step % s.ckpt_every == 0 or step == end:
            checkpoint()
    bar.close()
    return {"generator": g_ema, "discriminator": d, "log": log, "settings": asdict(s)}


def plot_training_log(log: list[dict], path: Path) -> Path:
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    g = [r for r in log if "l1" in r]
    wu = [r for r in log if "warmup_aux" in r]
    dd = [r for r in log if "d_loss" in r]
    if g:
        axes[0].plot([r["step"] for r in g], [r["l1"] for r in g], label="weighted L1")
        axes[0].plot([r["step"] for r in g], [r["aux"] for r in g], label="aux MSE", alpha=0.6)
    if wu:
        axes[0].plot([r["step"] for r in wu], [r["warmup_aux"] for r in wu], label="warm-up aux MSE (mapping only)")
    if g or wu:
        axes[0].set_yscale("log"); axes[0].set_xlabel("step"); axes[0].legend(); axes[0].set_title("generator")
    if dd:
        axes[1].plot([r["step"] for r in dd], [r["d_loss"] for r in dd], label="D loss")
        axes[1].set_xlabel("step"); axes[1].legend(); axes[1].set_title("discriminator")
    return save_figure(fig, path)
