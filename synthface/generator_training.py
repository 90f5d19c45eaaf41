"""Training the synthface default "original" generator: G(z) ~ render(P(z)).

The generator is the project's StyleGAN class in the synthface profile's
configuration. It is fitted by regression to the procedural renderer:

* L1 between G(z) and render(truth(z)), weighted up on the small facial features
  (eyes, eyebrows, lips, inner mouth: ``FEATURE_WEIGHT``) which otherwise come last;
* an auxiliary linear head predicting, from w, the world's *latent factors* (the
  correlated normals of ``WorldMap.factors``, smooth in z, before any threshold) plus the
  background-texture coefficients and the light direction (``aux_targets='factors'``;
  ``'params'`` regresses the renderer parameters instead, binary ones included). It gives
  the mapping network a direct signal to learn P(z). Its weight decays linearly from
  ``aux_weight`` to ``aux_final_weight`` over the first ``aux_until`` fraction of the
  steps; the head is not part of the shipped model (how linearly w encodes the factors
  is measured and reported, since it makes direction finding easier). Besides the image
  batch, every step also fits the head on ``aux_batch_size`` further z (mapping only, no
  rendering: milliseconds), so the mapping keeps learning P(z) at the warm-up's pace;
* a texture-statistics loss (``tex_weight``): per image and region (upper background,
  hair, skin, top strip), the standard deviation of three frequency bands of the grey
  image must match the render's. The renderer's textures are fixed fields that no
  convolution of StyleGAN's inputs can reproduce pixel for pixel, so L1 alone teaches G
  to draw none (the mean); this loss asks for the right *amount* of texture, whatever
  its phase: background texture, curls vs straight strands, wrinkles, the blurred strip
  of a quality defect;
* an exponential moving average of G's weights (the shipped weights);
* optionally (``perc_weight`` > 0) a perceptual loss: L1 between the features of G(z) and
  of the render in a frozen *teacher* (an attribute net trained on renders only, with
  another seed and z stream than the independent evaluator, which never takes part), and
  (``attr_weight`` > 0) an attribute loss that distils the teacher's reading of the render
  (gender, glasses, age, defect, the continuous factors) into G(z);
* optionally (``adv_weight`` > 0, from regression step ``adv_start``) a non-saturating GAN
  loss against a discriminator trained alongside on renders vs G (logistic loss, lazy R1),
  the usual lever for textures and sharpness that no pixel loss gives;
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
from stylegan import DiscriminatorConfig, GeneratorConfig, StyleGANDiscriminator, StyleGANGenerator
from pipeline.checkpoint import load_state_dict_strict, read_checkpoint, save_checkpoint
from stylegan.generator import to_signed_tensor
from synthface.evaluator import Evaluator
from synthface.renderer import BG_AMP_SPAN

FEATURE_CLASSES = (2, 3, 4, 5, 7, 8, 9)   # eyebrows, eyes, lips, inner mouth


@dataclass
class TrainSettings:
    mapping_warmup_steps: int = 12000  # phase 0: mapping + aux head only, fitted to truth(z) (no rendering)
    warmup_batch_size: int = 256
    warmup_lr_boost: float = 3000.0    # equalised-lr mapping weights move ~0.2 %/step at lr 2e-3 (ISSUES.md #5)
    warmup_cosine: int = 1             # cosine learning-rate decay over the warm-up (0: constant)
    steps: int = 6000                  # phase 1: image regression
    batch_size: int = 16               # 16 is ~2x faster per image than 32 on 2 cores (cache)
    lr: float = 2e-3
    mapping_lr_boost: float = 1000.0   # the mapping keeps learning P(z) during the regression (ISSUES.md #4, #5)
    feature_weight: float = 6.0
    aux_targets: str = "factors+params"  # 'factors' (latent factors + texture coefficients), 'params' or both
    aux_weight: float = 0.5
    aux_until: float = 0.5             # fraction of the regression steps over which the aux weight decays ...
    aux_final_weight: float = 0.1      # ... to this value (0: the head is dropped)
    aux_batch_size: int = 256          # extra z per regression step for the aux loss alone (no rendering; 0: off)
    mapping_ramp_steps: int = 0        # the mapping's lr ramps up from 0 over this many regression steps
    tex_weight: float = 2.0            # texture-statistics loss
    eval_every: int = 1000             # validation with the callback given to train_default_generator (0: never)
    init_generator: str = ""           # optional G state_dict (file with a 'generator' entry) to start from
    init_discriminator: str = ""       # optional D state_dict (file with a 'discriminator' entry) to start from
    perc_weight: float = 0.0           # perceptual loss: L1 between the teacher's features of G(z) and of the render
    teacher: str = ""                  # the teacher's weights (synthface.train_teacher), needed when perc_weight > 0
    rare_boost: float = 0.0            # oversample the rare binary factors in the regression batches (RenderSource)
    attr_weight: float = 0.0           # attribute loss: the teacher's reading of G(z) vs of the render (needs the teacher)
    frame_weight: float = 1.0          # extra L1 weight on a wide ring around the eyes (glasses frames: RGB only)
    adv_weight: float = 0.0            # weight of the non-saturating GAN loss in the regression phase (0: off)
    adv_start: int = 0                 # regression step from which the GAN loss (and D's updates) run
    r1_every: int = 4                  # lazy R1: the penalty every k D steps, scaled by k
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


def _weight_map(mask: np.ndarray, feature_weight: float, frame_weight: float = 1.0) -> torch.Tensor:
    """Per-pixel L1 weights: ``feature_weight`` on the small facial features (dilated 2 px)
    and, where larger, ``frame_weight`` on the eyes dilated by H/12 (where glasses frames are
    drawn: they are in the RGB only, not in the mask)."""
    m = np.isin(mask, FEATURE_CLASSES)
    # dilate a little so edges of the features count too
    t = torch.from_numpy(m.astype(np.float32)).unsqueeze(1)
    t = F.max_pool2d(t, 5, stride=1, padding=2)
    w = 1.0 + (feature_weight - 1.0) * t
    if frame_weight != 1.0:
        k = max(1, mask.shape[-1] // 12)
        eyes = torch.from_numpy(np.isin(mask, (4, 5)).astype(np.float32)).unsqueeze(1)
        ring = F.max_pool2d(eyes, 2 * k + 1, stride=1, padding=k)
        w = torch.maximum(w, 1.0 + (frame_weight - 1.0) * ring)
    return w


class TeacherFeatures(nn.Module):
    """Frozen teacher for the perceptual and attribute losses: the stem, the four blocks and the
    head of a trained ``synthface.evaluator.AttributeNet`` (eval mode, no gradients to its weights)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.stages = nn.ModuleList(list(net.features))
        self.head = net.head
        self.n_continuous = int(net.n_continuous)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True):          # always eval (BatchNorm statistics stay fixed)
        return super().train(False)

    def forward(self, x: torch.Tensor, with_head: bool = False):
        """Features after the stem's ReLU and after each block; with ``with_head`` also the head's
        output (continuous predictions, binary logits)."""
        if x.shape[-1] != 128:
            x = F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False, antialias=True)
        feats = []
        for i, m in enumerate(self.stages):
            x = m(x)
            if isinstance(m, nn.Sequential) or i == 2:
                feats.append(x)
        if not with_head:
            return feats
        out = self.head(x)
        return feats, (out[:, :self.n_continuous], out[:, self.n_continuous:])


def _feature_l1(ff, fr) -> torch.Tensor:
    return sum((a - b).abs().mean() / (b.abs().mean() + 1e-6) for a, b in zip(ff, fr)) / len(fr)


def perceptual_loss(teacher: TeacherFeatures, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean over the teacher's stages of L1(features(fake), features(real)) / mean |features(real)|."""
    with torch.no_grad():
        fr = teacher(real)
    return _feature_l1(teacher(fake), fr)


def teacher_losses(teacher: TeacherFeatures, fake: torch.Tensor, real: torch.Tensor):
    """(perceptual loss, attribute loss) in one pass. The attribute loss distils the teacher's
    reading of the render into G(z): BCE of the binary logits against the teacher's probabilities
    on the render (gender, glasses, age, defect) plus the L1 of its continuous outputs."""
    with torch.no_grad():
        fr, (cr, br) = teacher(real, with_head=True)
    ff, (cf, bf) = teacher(fake, with_head=True)
    attr = F.binary_cross_entropy_with_logits(bf, torch.sigmoid(br)) - \
        F.binary_cross_entropy_with_logits(br, torch.sigmoid(br))       # 0 when the readings agree
    attr = attr + (cf - cr).abs().mean()
    return _feature_l1(ff, fr), attr


TEXTURE_REGIONS = ("upper background", "hair", "skin", "top strip")


def texture_regions(mask: np.ndarray, erode: int | None = None) -> torch.Tensor:
    """[B, H, W] class ids -> [B, 4, H, W] float region masks (see ``TEXTURE_REGIONS``).

    The class regions are eroded by ``erode`` pixels (default 6 at 128 px, scaled with H) so
    that the band statistics measure the texture inside a region, not the edges around it."""
    b, h, w = mask.shape
    rows = np.arange(h)[None, :, None]
    regs = np.stack([(mask == 0) & (rows < h // 2), mask == 10, mask == 1,
                     np.broadcast_to(rows < h // 4, mask.shape)], axis=1)
    t = torch.from_numpy(regs.astype(np.float32))
    k = int(round(6 * h / 128)) if erode is None else int(erode)
    if k > 0:
        eroded = 1.0 - F.max_pool2d(1.0 - t[:, :3], 2 * k + 1, stride=1, padding=k)
        t = torch.cat([eroded, t[:, 3:]], dim=1)
    return t


def _gauss(x: torch.Tensor, sigma: float) -> torch.Tensor:
    k = int(2 * math.ceil(2.5 * sigma) + 1)
    t = torch.arange(k, dtype=x.dtype) - k // 2
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    x = F.conv2d(F.pad(x, (k // 2, k // 2, 0, 0), mode="reflect"), g.view(1, 1, 1, k))
    return F.conv2d(F.pad(x, (0, 0, k // 2, k // 2), mode="reflect"), g.view(1, 1, k, 1))


def texture_stats(images: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Per image and region, the std of four bands of the grey image: [B, R, 4].

    Bands: fine (x - G1 x), middle (G1 x - G3 x), coarse (G3 x), Gi a Gaussian blur of
    sigma i * H / 128 pixels, and the grey image itself (what stage 4's background std
    measures). Differentiable; phase-free (any texture of the same spectrum and amplitude
    scores the same).
    """
    gray = images.mean(dim=1, keepdim=True)
    s = images.shape[-1] / 128.0
    lo1 = _gauss(gray, 1.0 * s)
    lo3 = _gauss(gray, 3.0 * s)
    n = regions.sum(dim=(2, 3)).clamp_min(1.0)
    out = []
    for band in (gray - lo1, lo1 - lo3, lo3, gray):
        m = (band * regions).sum(dim=(2, 3)) / n
        v = (band.pow(2) * regions).sum(dim=(2, 3)) / n - m.pow(2)
        out.append(torch.sqrt(v.clamp_min(0.0) + 1e-6))
    return torch.stack(out, dim=-1)


class RenderSource:
    """Seeded batches (z, target image in [-1, 1], mask, standardised aux targets).

    ``aux_targets='factors'``: the world's latent factors, the four background-texture
    weights (times the texture amplitude) and the light direction's cosine and sine;
    ``'params'``: the renderer parameters; ``'factors+params'``: both (w then also encodes the
    thresholded flags — female, glasses, old, defect — linearly, which the synthesis needs to
    switch whole features on and off).
    """

    RARE_WEIGHTS = {"quality_defect": 6.0, "glasses": 2.0, "old": 1.0}

    def __init__(self, world, render_batch, z_dim: int, aux_targets: str = "factors+params",
                 rare_boost: float = 0.0):
        self.rare_boost = float(rare_boost)
        if aux_targets not in ("factors", "params", "factors+params"):
            raise ValueError(f"aux_targets must be 'factors', 'params' or 'factors+params', got {aux_targets!r}")
        self.world = world
        self.render_batch = render_batch
        self.z_dim = z_dim
        self.aux_targets = aux_targets
        z = np.random.default_rng(12345).standard_normal((4096, z_dim), dtype=np.float32)
        p = self.aux_matrix(z)
        self.p_mean, self.p_std = p.mean(0), p.std(0) + 1e-6

    def param_matrix(self, z: np.ndarray, table=None) -> np.ndarray:
        t = self.world.truth(z) if table is None else table
        cols = self.world.numeric_columns() if hasattr(self.world, "numeric_columns") else list(t.columns)
        return np.asarray(t[cols], dtype=np.float32)

    def aux_matrix(self, z: np.ndarray, table=None) -> np.ndarray:
        t = self.world.truth(z) if table is None else table
        if self.aux_targets == "params":
            return self.param_matrix(z, t)
        ta = 2.0 * np.pi * t["bg_tex_a"].to_numpy(np.float64)
        tb = 2.0 * np.pi * t["bg_tex_b"].to_numpy(np.float64)
        amp = 1.0 + BG_AMP_SPAN * t["bg_std"].to_numpy(np.float64)[:, None]
        tex = np.stack([np.cos(ta) * np.cos(tb), np.cos(ta) * np.sin(tb), np.sin(ta) * np.cos(tb),
                        np.sin(ta) * np.sin(tb)], axis=1) * amp
        ld = 2.0 * np.pi * t["light_dir"].to_numpy(np.float64)
        parts = [self.world.factors(z), tex, np.stack([np.cos(ld), np.sin(ld)], 1)]
        if self.aux_targets == "factors+params":
            parts.append(self.param_matrix(z, t))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def _standardise(self, m: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((m - self.p_mean) / self.p_std)

    def params_batch(self, step: int, batch_size: int, stream: int = 2):
        """(z, standardised aux targets) without rendering, for the mapping warm-up (stream 2) and
        the extra aux batches of the regression (stream 3)."""
        z = np.random.default_rng([stream, step]).standard_normal((batch_size, self.z_dim), dtype=np.float32)
        return torch.from_numpy(z), self._standardise(self.aux_matrix(z))

    def batch(self, step: int, batch_size: int, stream: int = 0):
        """Rendered training batch. With ``rare_boost`` > 0 (image-regression stream 0 only) the batch
        is a seeded weighted draw from 4x candidates, each weighted 1 + rare_boost * sum of
        ``RARE_WEIGHTS`` of its flags, so that the rare binary factors (defect 5 %, glasses 15 %,
        old 27 %) are not drowned in the pixel losses; boost 1 gives about 20 / 27 / 32 %."""
        rng = np.random.default_rng([stream, step])
        if self.rare_boost > 0 and stream == 0:
            cand = rng.standard_normal((4 * batch_size, self.z_dim), dtype=np.float32)
            t = self.world.truth(cand)
            wt = 1.0 + self.rare_boost * sum(v * (t[k].to_numpy() > 0.5) for k, v in self.RARE_WEIGHTS.items())
            pick = np.sort(rng.choice(len(cand), size=batch_size, replace=False, p=wt / wt.sum()))
            z = np.ascontiguousarray(cand[pick])
            params = t.iloc[pick].reset_index(drop=True)
        else:
            z = rng.standard_normal((batch_size, self.z_dim), dtype=np.float32)
            params = self.world.truth(z)
        rgb, mask = self.render_batch(params)
        return torch.from_numpy(z), to_signed_tensor(rgb), mask, self._standardise(self.aux_matrix(z, params))


def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1.0 - decay)
        for be, bm in zip(ema.buffers(), model.buffers()):
            be.copy_(bm)


def _d_step(d: nn.Module, opt_d, real: torch.Tensor, fake: torch.Tensor, gamma: float, do_r1: bool = True) -> dict:
    """One logistic-loss discriminator update (real = renders, fake = detached G output),
    with the R1 penalty on the reals when ``do_r1``."""
    real = real.detach().requires_grad_(do_r1)
    d_real, d_fake = d(real), d(fake)
    l_d = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
    out = {}
    if do_r1:
        grad, = torch.autograd.grad(d_real.sum(), real, create_graph=True)
        r1 = grad.pow(2).sum(dim=(1, 2, 3)).mean()
        l_d = l_d + 0.5 * gamma * r1
        out["r1"] = r1.item()
    opt_d.zero_grad(set_to_none=True)
    l_d.backward()
    opt_d.step()
    return {"d_loss": l_d.item(), "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item(), **out}


def aux_weight_at(s: TrainSettings, regression_step: int) -> float:
    """Linear decay from ``aux_weight`` to ``aux_final_weight`` over ``aux_until * steps``."""
    frac = min(1.0, regression_step / max(1.0, s.aux_until * s.steps))
    return s.aux_weight + (s.aux_final_weight - s.aux_weight) * frac


def train_default_generator(profile, source: RenderSource, out_dir: Path, s: TrainSettings,
                            show_progress: bool = True, stop_after: int | None = None,
                            eval_fn=None) -> dict:
    """Run (or resume) the training; ``stop_after`` ends this call after that global step
    (with a checkpoint), as an interruption would; calling again resumes.

    ``eval_fn(g_ema) -> dict | None`` (optional) is called every ``eval_every`` regression steps
    and at the end of the regression; its results (when not None) go to ``eval_log.json``.
    """
    torch.set_num_threads(s.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    if source.aux_targets != s.aux_targets:
        raise ValueError(f"the source's aux_targets {source.aux_targets!r} differ from the settings' {s.aux_targets!r}")
    gcfg = GeneratorConfig.from_dict(profile["generator"])
    dcfg = DiscriminatorConfig.from_dict(profile["discriminator"])
    torch.manual_seed(s.seed)
    g = StyleGANGenerator(gcfg).train()
    if s.init_generator:
        load_state_dict_strict(g, read_checkpoint(s.init_generator)["generator"], what=f"generator of {s.init_generator}")
    g_ema = copy.deepcopy(g).eval().requires_grad_(False)
    d = StyleGANDiscriminator(dcfg).train()
    if s.init_discriminator:
        load_state_dict_strict(d, read_checkpoint(s.init_discriminator)["discriminator"],
                               what=f"discriminator of {s.init_discriminator}")
    teacher = None
    if s.perc_weight > 0 or s.attr_weight > 0:
        if not s.teacher:
            raise ValueError("perc_weight > 0 or attr_weight > 0 needs the teacher's weights (--teacher, see synthface.train_teacher)")
        teacher = TeacherFeatures(Evaluator.from_state(read_checkpoint(s.teacher)).net)
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
    warm = s.mapping_warmup_steps
    base_w = [grp["lr"] for grp in opt_w.param_groups]
    state_path = out_dir / "train_state.pth"
    log: list[dict] = []
    eval_log: list[dict] = []
    step = 0
    if state_path.is_file():
        st = read_checkpoint(state_path)
        g.load_state_dict(st["generator"]); g_ema.load_state_dict(st["generator_smooth"])
        d.load_state_dict(st["discriminator"]); aux.load_state_dict(st["aux"])
        opt_g.load_state_dict(st["opt_g"]); opt_d.load_state_dict(st["opt_d"]); opt_w.load_state_dict(st["opt_w"])
        step = int(st["step"])
        log = json.loads((out_dir / "train_log.json").read_text()) if (out_dir / "train_log.json").is_file() else []
        if (out_dir / "eval_log.json").is_file():
            eval_log = json.loads((out_dir / "eval_log.json").read_text())

    def checkpoint():
        save_checkpoint({"generator": g.state_dict(), "generator_smooth": g_ema.state_dict(),
                         "discriminator": d.state_dict(), "aux": aux.state_dict(),
                         "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "opt_w": opt_w.state_dict(),
                         "step": torch.tensor(step)}, state_path)
        atomic_write_json(out_dir / "train_log.json", log)
        atomic_write_json(out_dir / "eval_log.json", eval_log)

    total = warm + s.steps + s.d_steps
    bar = tqdm(total=total, initial=step, desc="synthface G", disable=not show_progress)
    t_last = time.perf_counter()
    end = total if stop_after is None else min(total, stop_after)
    while step < end:
        if step < warm:
            if s.warmup_cosine:
                f = 0.5 * (1.0 + math.cos(math.pi * step / warm))
                for grp, lr0 in zip(opt_w.param_groups, base_w):
                    grp["lr"] = lr0 * f
            z, p = source.params_batch(step, s.warmup_batch_size)
            l_aux = F.mse_loss(aux(g.mapping(z)["w"]), p)
            opt_w.zero_grad(set_to_none=True)
            l_aux.backward()
            opt_w.step()
            _ema_update(g_ema, g, 0.0)          # EMA starts from the warmed-up mapping
            rec = {"step": step, "warmup_aux": l_aux.item()}
        elif step < warm + s.steps:
            if s.mapping_ramp_steps > 0:
                opt_g.param_groups[1]["lr"] = s.lr * s.mapping_lr_boost * min(1.0, (step - warm) / s.mapping_ramp_steps)
            z, target, mask, p = source.batch(step, s.batch_size)
            wmap = _weight_map(mask, s.feature_weight, s.frame_weight)
            res = g(z, style_mixing_prob=0.0, w_moving_decay=0.995)
            l1 = ((res["image"] - target).abs() * wmap).mean() / wmap.mean()
            aux_w = aux_weight_at(s, step - warm)
            l_aux = F.mse_loss(aux(res["w"]), p)
            rec = {"step": step, "l1": l1.item(), "aux": l_aux.item(), "aux_weight": aux_w}
            if s.aux_batch_size > 0:
                za, pa = source.params_batch(step, s.aux_batch_size, stream=3)
                l_aux = 0.5 * (l_aux + F.mse_loss(aux(g.mapping(za)["w"]), pa))
                rec["aux_big"] = l_aux.item()
            loss = l1 + aux_w * l_aux
            if s.tex_weight > 0:
                regions = texture_regions(mask)
                l_tex = (texture_stats(res["image"], regions) - texture_stats(target, regions)).abs().mean()
                loss = loss + s.tex_weight * l_tex
                rec["tex"] = l_tex.item()
            if teacher is not None:
                l_perc, l_attr = teacher_losses(teacher, res["image"], target)
                loss = loss + s.perc_weight * l_perc + s.attr_weight * l_attr
                rec["perc"] = l_perc.item()
                rec["attr"] = l_attr.item()
            if s.adv_weight > 0 and step - warm >= s.adv_start:
                k = step - warm - s.adv_start
                rec.update(_d_step(d, opt_d, target, res["image"].detach(), s.r1_gamma * s.r1_every,
                                   do_r1=k % s.r1_every == 0))
                l_adv = F.softplus(-d(res["image"])).mean()
                loss = loss + s.adv_weight * l_adv
                rec["adv"] = l_adv.item()
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
            decay = min(s.ema_decay, (1 + step - warm) / (10 + step - warm))
            _ema_update(g_ema, g, decay)
        else:
            z, real, _, _ = source.batch(step, s.batch_size, stream=1)
            with torch.no_grad():
                fake = g_ema(z)["image"]
            rec = {"step": step, **_d_step(d, opt_d, real, fake, s.r1_gamma)}
        step += 1
        now = time.perf_counter()
        rec["seconds"] = now - t_last
        t_last = now
        if step % s.log_every == 0 or step == total:
            log.append(rec)
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in rec.items() if k in ("l1", "aux", "tex", "d_loss", "warmup_aux")})
        reg_step = step - warm
        if eval_fn is not None and 0 < reg_step <= s.steps and s.eval_every > 0 \
                and (reg_step % s.eval_every == 0 or reg_step == s.steps):
            scores = eval_fn(g_ema)
            if scores:
                eval_log.append({"step": step, "regression_step": reg_step, **scores})
            t_last = time.perf_counter()
        if step % s.ckpt_every == 0 or step == end:
            checkpoint()
    bar.close()
    return {"generator": g_ema, "discriminator": d, "aux": aux, "log": log, "eval_log": eval_log,
            "settings": asdict(s)}
