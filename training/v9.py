"""FineTune-v9 trainer and its monitor (spec 02 §2.3–2.5; 02a M4, M6–M8, §D).

:class:`V9Trainer` implements :class:`training.trainer.Trainer` for the split-mapping generator
(:mod:`stylegan_modified.v9`):

* loss: GenForce logistic — D: softplus(D(fake)) + softplus(−D(real)) + γ/2·R1 (γ 10, R1 = batch
  mean of ‖∂ΣD(real)/∂real‖²), G: softplus(−D(G(z))); labels **zeros** for G and D; fresh z for
  every update; G forward in train mode (``w_avg`` decay 0.995, random noise, no style mixing);
* step rule: D up to ``d_max_updates`` (4) while its loss ≥ ``d_ratio`` (2.5) × the previous
  step's last G loss (one D update in the first step), then G up to ``g_max_updates`` (4) while
  its loss ≥ ``g_ratio`` (2) × D's last loss (:func:`run_step_rule`);
* frozen sets (§2.3): G trains the whole mapping and the synthesis blocks up to 16×16 with their
  toRGB (``layer0``–``layer5``, ``output0``–``output2``); D trains the blocks from 16×16 down
  (``layer8``–``layer13`` at 256 px), the fromRGB layers below 16×16 (``input5``, ``input6``,
  unused at lod 0) and the head (``layer14``). Freezing is re-applied at every phase switch: in a
  D update every G parameter is frozen, in a G update every D parameter;
* AdamW lr 1e-4, default betas and weight decay 0.01, for G and for D (the never-stepped cosine
  schedulers are omitted: constant lr). ``optimizer_all_parameters`` (on, the original's, 02a M4)
  builds each optimiser over *all* the model's parameters; off: over the trainable ones only.
  Frozen parameters never hold a gradient here (``zero_grad(set_to_none=True)``, no backward
  reaches them), so the two give the same parameters; they differ in the optimiser state and
  in what happens to a frozen parameter that does hold a gradient (on: AdamW decays and moves it).

Random draws come from generators seeded by (seed, epoch, step, purpose), made for the global
batch (each process takes its rows); with several processes gradients are averaged over ranks
after each backward (no DDP wrapper, because the frozen sets change between phases).

:class:`V9Monitor` is the original's monitoring (02a M7, M8): at the log points (idx % 50 == 0,
and in epoch 0 idx < 10 or idx % 25 == 0) 100 images from z ~ N(0, I), label ~ N(0, I) (float64
draws cast to float32, fixed noise, ψ = 1), optionally through a JPEG round trip (OpenCV, quality
95), scored by the stage-2 fold models of gender / quality / age / glass (optionally in train
mode, dropout on, as the original); each fold output rounded to 4 dp, the per-image mean of the
rounded values rounded, the 100-image mean rounded. ``train_log.csv`` has exactly the original's
columns (:data:`LOG_COLUMNS`, pandas index first); the independent evaluator's concept figures
of the same images, when an evaluator is given, go beside it in ``concept_log.csv``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from pipeline.io import atomic_write_text
from pipeline.vocabulary import FILTER_PROPERTIES
from stylegan.generator import postprocess
from stylegan_modified.conditional import ConditionalDiscriminator, synthesize
from stylegan_modified.distributed import DistContext, step_generator
from stylegan_modified.v9 import V9Generator, branch_stats

LOG_COLUMNS = ["epoch", "idx", "d_loss", "g_loss", "d_train_count", "g_train_count", "real_scores_mean",
               "fake_scores_mean", "real_fake_auroc", "mean_gender_score", "mean_quality_score", "mean_age_score",
               "mean_glass_score"]
CONCEPT_COLUMNS = ["epoch", "idx", "cnn_gender", "eval_female", "cnn_quality", "eval_good_quality", "cnn_age",
                   "eval_old", "cnn_glass", "eval_glasses"]
TRAINABLE_UP_TO_RES = 16        # G trains the synthesis blocks up to this resolution, D the blocks from it down


@dataclass
class V9Settings:
    batch_size: int = 8                       # global batch (all processes together)
    lr: float = 1e-4
    weight_decay: float = 0.01
    r1_gamma: float = 10.0
    d_max_updates: int = 4
    d_ratio: float = 2.5
    g_max_updates: int = 4
    g_ratio: float = 2.0
    w_moving_decay: float = 0.995
    randomize_noise: bool = True
    optimizer_all_parameters: bool = True     # the original's quirk (02a M4)
    seed: int = 0

    def validate(self) -> None:
        for k in ("batch_size", "d_max_updates", "g_max_updates"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.lr <= 0 or self.r1_gamma < 0:
            raise ValueError(f"lr must be > 0 and r1_gamma >= 0, got {self.lr}, {self.r1_gamma}")


# ------------------------------------------------------------------------------------ frozen sets

def _block(res: int) -> int:
    return int(math.log2(res)) - 2          # synthesis block of a resolution (4 px -> 0)


def generator_trainable(g: V9Generator) -> list[str]:
    """Module prefixes G trains: the mapping, synthesis ``layer0``… and ``output0``… up to 16×16."""
    n = min(_block(TRAINABLE_UP_TO_RES) + 1, g.num_layers // 2)
    return (["mapping"] + [f"synthesis.layer{i}" for i in range(2 * n)]
            + [f"synthesis.output{b}" for b in range(n)])


def discriminator_trainable(d: ConditionalDiscriminator) -> list[str]:
    """Module prefixes D trains: the blocks from 16×16 down, the fromRGB layers below 16×16, the dense layers."""
    b16 = max(int(math.log2(d.cfg.resolution // TRAINABLE_UP_TO_RES)), 0) if d.cfg.resolution >= 16 else 0
    layers = [f"layer{i}" for i in range(2 * b16, d.head_index + 1)]
    inputs = [f"input{b}" for b in range(b16 + 1, d.n_blocks)]
    return inputs + layers


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def trainable_names(module: nn.Module, prefixes) -> list[str]:
    return [n for n, _ in module.named_parameters() if _under(n, prefixes)]


# ------------------------------------------------------------------------------------ step rule

def run_step_rule(d_update, g_update, last_g: float | None, s: V9Settings) -> dict:
    """The v9 step rule with callables ``d_update(k) -> loss`` and ``g_update(k) -> loss`` (k = 0, 1, …)."""
    d_count = 0
    while True:
        d_loss = float(d_update(d_count))
        d_count += 1
        if d_count >= s.d_max_updates or last_g is None or d_loss < s.d_ratio * last_g:
            break
    g_count = 0
    while True:
        g_loss = float(g_update(g_count))
        g_count += 1
        if g_count >= s.g_max_updates or g_loss < s.g_ratio * d_loss:
            break
    return {"d_loss": d_loss, "g_loss": g_loss, "d_train_count": d_count, "g_train_count": g_count}


# ------------------------------------------------------------------------------------ trainer

def _as_signed(x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x)
    return x.to(torch.float32).div(127.5).sub(1.0) if x.dtype == torch.uint8 else x.to(torch.float32)


class V9Trainer:
    """G (:class:`V9Generator`), D, their AdamW optimisers and the step rule (module docstring)."""

    def __init__(self, g: V9Generator, d: ConditionalDiscriminator, s: V9Settings | None = None,
                 ctx: DistContext | None = None, monitor: "V9Monitor | None" = None, out_dir: Path | None = None):
        """``monitor`` (optional): run after the step at every log point on the main process; with
        ``out_dir`` the trainer keeps ``train_log.csv``, ``concept_log.csv`` and the per-point
        ``inference_test_during_finetuning/epoch_EEEE_idx_IIII/inference_test_result.csv`` there
        (rewritten in full at every log point, as the original), so the loop needs no hook."""
        self.s = s = s or V9Settings()
        s.validate()
        self.g, self.d, self.ctx = g, d, ctx or DistContext()
        self.g_trainable = trainable_names(g, generator_trainable(g))
        self.d_trainable = trainable_names(d, discriminator_trainable(d))
        self._freeze("d")                  # the original freezes before building the optimisers
        self.opts = {"generator": self._optimizer(g, self.g_trainable),
                     "discriminator": self._optimizer(d, self.d_trainable)}
        self.last_g: float | None = None
        self.label_dim = g.spec.label_dim
        self.monitor, self.out_dir = monitor, (Path(out_dir) if out_dir is not None else None)
        self.log_rows: list[dict] = []
        self.concept_rows: list[dict] = []

    def _optimizer(self, module: nn.Module, names: list[str]) -> torch.optim.AdamW:
        if self.s.optimizer_all_parameters:
            params = list(module.parameters())
        else:
            own = dict(module.named_parameters())
            params = [own[n] for n in names]
        return torch.optim.AdamW(params, lr=self.s.lr, weight_decay=self.s.weight_decay)

    def _freeze(self, phase: str) -> None:
        """``phase`` 'd': every G parameter frozen, D's trainable set on; 'g': the reverse."""
        train, other, names = (self.d, self.g, self.d_trainable) if phase == "d" else (self.g, self.d, self.g_trainable)
        other.requires_grad_(False)
        keep = set(names)
        for n, p in train.named_parameters():
            p.requires_grad_(n in keep)

    def _average_grads(self, module: nn.Module) -> None:
        if self.ctx.world == 1:
            return
        for p in module.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.ctx.world

    def _z(self, gen: torch.Generator, b_global: int) -> torch.Tensor:
        return self.ctx.local_rows(torch.randn((b_global, self.g.cfg.z_dim), generator=gen)).to(self.ctx.device)

    def _fake(self, epoch: int, step: int, purpose: int, b_global: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = self._z(step_generator(self.s.seed, epoch, step, purpose), b_global)
        y = torch.zeros(z.shape[0], self.label_dim, device=z.device)
        img = self.g(z, y, style_mixing_prob=0.0, randomize_noise=self.s.randomize_noise,
                     w_moving_decay=self.s.w_moving_decay,
                     generator=step_generator(self.s.seed, epoch, step, purpose + 1000))["image"]
        return img, y

    def d_update(self, x_real: torch.Tensor, epoch: int, step: int, k: int) -> tuple[float, dict]:
        """One D update (fresh z, zero labels, R1); returns (loss over ranks, figures)."""
        self._freeze("d")
        b_global = x_real.shape[0] * self.ctx.world
        fake, y = self._fake(epoch, step, 10 + k, b_global)
        real = x_real.detach().requires_grad_(self.s.r1_gamma > 0)
        rs = self.d(real, y)
        fs = self.d(fake, y)
        loss = F.softplus(fs).mean() + F.softplus(-rs).mean()
        r1 = torch.zeros(())
        if self.s.r1_gamma > 0:
            grad, = torch.autograd.grad(rs.sum(), real, create_graph=True)
            r1 = grad.pow(2).flatten(1).sum(1).mean()
            loss = loss + 0.5 * self.s.r1_gamma * r1
        opt = self.opts["discriminator"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self._average_grads(self.d)
        opt.step()
        return float(self.ctx.mean(loss)), {"rs": rs.detach().reshape(-1), "fs": fs.detach().reshape(-1),
                                            "r1": float(self.ctx.mean(r1))}

    def g_update(self, b_local: int, epoch: int, step: int, k: int) -> float:
        """One G update (fresh z, zero labels); returns the loss (mean over ranks)."""
        self._freeze("g")
        fake, y = self._fake(epoch, step, 50 + k, b_local * self.ctx.world)
        loss = F.softplus(-self.d(fake, y)).mean()
        opt = self.opts["generator"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self._average_grads(self.g)
        opt.step()
        return float(self.ctx.mean(loss))

    def train_step(self, x_real: torch.Tensor, y_real: torch.Tensor, epoch: int, step: int) -> dict:
        """One v9 step on a batch of reals (uint8 or [-1, 1] float); ``y_real`` is ignored (zero labels)."""
        self.g.train()
        self.d.train()
        x = _as_signed(x_real).to(self.ctx.device)
        last = {}

        def d_up(k):
            loss, fig = self.d_update(x, epoch, step, k)
            last.update(fig)
            return loss

        out = run_step_rule(d_up, lambda k: self.g_update(x.shape[0], epoch, step, k), self.last_g, self.s)
        self.last_g = out["g_loss"]
        rs, fs = self.ctx.gather(last["rs"]), self.ctx.gather(last["fs"])
        scores = torch.cat([rs, fs]).double().numpy()
        truth = np.r_[np.ones(len(rs)), np.zeros(len(fs))]
        fig = {"epoch": int(epoch), "idx": int(step), **out, "real_scores_mean": float(rs.mean()),
               "fake_scores_mean": float(fs.mean()), "real_fake_auroc": float(roc_auc_score(truth, scores)),
               "r1": last["r1"]}
        if self.monitor is not None and self.ctx.is_main and is_log_point(epoch, step):
            fig.update(self._monitor(fig))
        return fig

    def _monitor(self, fig: dict) -> dict:
        """Measure, keep the log rows, rewrite the logs (02a M7, M8); returns the means and evaluator shares."""
        epoch, idx = fig["epoch"], fig["idx"]
        means, frame, concept = self.monitor.measure(self.g, epoch, idx)
        self.log_rows = [r for r in self.log_rows if (r["epoch"], r["idx"]) != (epoch, idx)] + [log_row(fig, means)]
        self.concept_rows = ([r for r in self.concept_rows if (r["epoch"], r["idx"]) != (epoch, idx)]
                             + [concept_row(epoch, idx, means, concept)])
        if self.out_dir is not None:
            point = self.out_dir / "inference_test_during_finetuning" / f"epoch_{epoch:04d}_idx_{idx:04d}"
            point.mkdir(parents=True, exist_ok=True)
            write_inference_result(point / "inference_test_result.csv", frame)
            write_train_log(self.out_dir / "train_log.csv", self.log_rows)
            write_concept_log(self.out_dir / "concept_log.csv", self.concept_rows)
        return {**means, **concept}

    def end_epoch(self, epoch: int) -> dict:
        """The new branch's use on a fixed sample (256 z, zero labels): ‖w2'‖/‖w1'‖ and variance shares."""
        gen = torch.Generator().manual_seed(int(self.s.seed) + 9_000_009)
        z = torch.randn(256, self.g.cfg.z_dim, generator=gen)
        return branch_stats(self.g, z, torch.zeros(256, self.label_dim))

    def state(self) -> dict:
        return {"generator": self.g.state_dict(), "discriminator": self.d.state_dict(),
                "opt_generator": self.opts["generator"].state_dict(),
                "opt_discriminator": self.opts["discriminator"].state_dict(),
                "last_g": self.last_g, "settings": asdict(self.s), "log_rows": list(self.log_rows),
                "concept_rows": list(self.concept_rows)}

    def load(self, st: dict) -> None:
        self.g.load_state_dict(st["generator"])
        self.d.load_state_dict(st["discriminator"])
        self.opts["generator"].load_state_dict(st["opt_generator"])
        self.opts["discriminator"].load_state_dict(st["opt_discriminator"])
        self.last_g = st["last_g"]
        self.log_rows = list(st.get("log_rows", []))
        self.concept_rows = list(st.get("concept_rows", []))

    def models(self) -> dict[str, nn.Module]:
        return {"generator": self.g, "discriminator": self.d}


# ------------------------------------------------------------------------------------ monitoring

def is_log_point(epoch: int, idx: int) -> bool:
    """The original's cadence: idx % 50 == 0, and in epoch 0 also idx < 10 and idx % 25 == 0."""
    return idx % 50 == 0 or (epoch == 0 and (idx < 10 or idx % 25 == 0))


def jpeg_round_trip(images_nhwc: np.ndarray, quality: int = 95) -> np.ndarray:
    """Encode each uint8 RGB image as JPEG with OpenCV (quality ``quality``, its default 4:2:0) and decode it."""
    out = np.empty_like(images_nhwc)
    for i, im in enumerate(images_nhwc):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(im, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise OSError("JPEG encoding failed")
        out[i] = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return out


def load_monitor_cnns(profile, stage2_dir: Path | None = None) -> dict[str, list[nn.Module]]:
    """The stage-2 fold models of gender, quality, age and glasses (strict loads, frozen)."""
    from cnn.kfold import load_model, model_path, trained_fold_settings   # the stage-2 package, only needed when monitoring
    stage2_dir = Path(stage2_dir) if stage2_dir else profile.stage_dir("stage2")
    out = {}
    for prop in FILTER_PROPERTIES:
        s = trained_fold_settings(stage2_dir, prop)      # the settings recorded beside the fold models
        models = []
        for k in range(s.folds):
            p = model_path(stage2_dir / "cnn" / "models", prop, k)
            if not p.is_file():
                raise FileNotFoundError(f"{prop} CNN fold model {p} not found; run run_cnn.py first (stage 2 trains it)")
            models.append(load_model(s, p).requires_grad_(False))
        out[prop] = models
    return out


@dataclass
class MonitorSettings:
    n_images: int = 100
    batch_size: int = 4                       # generator sub-batches (the original's 4)
    jpeg_quality: int | None = 95             # None: score the in-memory images (no JPEG round trip)
    cnn_train_mode: bool = False              # the original's quirk: dropout on while scoring
    seed: int = 0


class V9Monitor:
    """Concept figures of ``n_images`` random outputs at a log point (module docstring)."""

    def __init__(self, cnns: dict[str, list[nn.Module]], s: MonitorSettings | None = None, evaluator=None):
        missing = [p for p in FILTER_PROPERTIES if p not in cnns]
        if missing:
            raise ValueError(f"monitor CNNs missing for {', '.join(missing)}")
        self.cnns, self.s, self.evaluator = cnns, s or MonitorSettings(), evaluator

    def _rng(self, epoch: int, idx: int) -> np.random.Generator:
        return np.random.default_rng([int(self.s.seed), int(epoch), int(idx), 9])

    def images(self, g: V9Generator, epoch: int, idx: int) -> np.ndarray:
        """uint8 NHWC outputs for this log point's (z, label) draws (fixed noise, ψ = 1)."""
        rng = self._rng(epoch, idx)
        z = rng.normal(size=(self.s.n_images, g.cfg.z_dim)).astype(np.float32)
        label = rng.normal(size=(self.s.n_images, g.spec.label_dim)).astype(np.float32)
        return postprocess(synthesize(g, z, label, batch_size=self.s.batch_size))

    def score(self, images_nhwc: np.ndarray, epoch: int = 0, idx: int = 0) -> pd.DataFrame:
        """The per-image frame of ``inference_test_result.csv`` (rounded as the original)."""
        x = images_nhwc if self.s.jpeg_quality is None else jpeg_round_trip(images_nhwc, self.s.jpeg_quality)
        x = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).to(torch.float32).div(255.0)
        per_fold = {}
        with torch.random.fork_rng():
            torch.manual_seed(int(np.random.SeedSequence([self.s.seed, epoch, idx, 7]).generate_state(1)[0]))
            with torch.no_grad():
                for prop in FILTER_PROPERTIES:
                    for k, m in enumerate(self.cnns[prop]):
                        m.train(self.s.cnn_train_mode)
                        per_fold[(prop, k)] = np.round(m(x).reshape(-1).double().numpy(), 4)
                        m.eval()
        df = pd.DataFrame({"img_no": np.arange(len(x))})
        for prop in FILTER_PROPERTIES:
            folds = [per_fold[(prop, k)] for k in range(len(self.cnns[prop]))]
            df[f"{prop}_score"] = np.round(np.mean(folds, axis=0), 4)
        n_folds = max(len(v) for v in self.cnns.values())
        for k in range(n_folds):
            for prop in FILTER_PROPERTIES:
                if k < len(self.cnns[prop]):
                    df[f"{prop}_score_cnn_{k}"] = per_fold[(prop, k)]
        return df

    def measure(self, g: V9Generator, epoch: int, idx: int) -> tuple[dict, pd.DataFrame, dict]:
        """(the four ``mean_*_score`` log values, the per-image frame, the evaluator's concept figures or {})."""
        imgs = self.images(g, epoch, idx)
        df = self.score(imgs, epoch, idx)
        means = {f"mean_{p}_score": float(np.round(df[f"{p}_score"].mean(), 4)) for p in FILTER_PROPERTIES}
        concept = {}
        if self.evaluator is not None:
            pred = self.evaluator.predict(imgs)
            concept = {"eval_female": float((pred["female"] >= 0.5).mean()),
                       "eval_good_quality": float((pred["quality_defect"] < 0.5).mean()),
                       "eval_old": float((pred["old"] >= 0.5).mean()),
                       "eval_glasses": float((pred["glasses"] >= 0.5).mean())}
        return means, df, concept


def log_row(step: dict, means: dict) -> dict:
    """One ``train_log.csv`` row: the step's figures and the monitor's means, every float rounded to 4 dp."""
    row = {**step, **means}
    missing = [c for c in LOG_COLUMNS if c not in row]
    if missing:
        raise KeyError(f"train_log row lacks {', '.join(missing)}")
    return {c: (round(float(row[c]), 4) if isinstance(row[c], float) else row[c]) for c in LOG_COLUMNS}


def concept_row(epoch: int, idx: int, means: dict, concept: dict) -> dict:
    """The stage-2 CNN means beside the independent evaluator's shares, for ``concept_log.csv``."""
    return {"epoch": epoch, "idx": idx, "cnn_gender": means["mean_gender_score"], "eval_female": concept.get("eval_female"),
            "cnn_quality": means["mean_quality_score"], "eval_good_quality": concept.get("eval_good_quality"),
            "cnn_age": means["mean_age_score"], "eval_old": concept.get("eval_old"),
            "cnn_glass": means["mean_glass_score"], "eval_glasses": concept.get("eval_glasses")}


def write_train_log(path, rows: list[dict]) -> pd.DataFrame:
    """``train_log.csv`` in full (the original rewrites it at every log point), pandas index first."""
    df = pd.DataFrame(rows, columns=LOG_COLUMNS)
    atomic_write_text(path, df.to_csv(lineterminator="\n"))
    return df


def write_concept_log(path, rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=CONCEPT_COLUMNS)
    atomic_write_text(path, df.to_csv(index=False, lineterminator="\n"))
    return df


def write_inference_result(path, df: pd.DataFrame) -> None:
    """``inference_test_result.csv`` of a log point (pandas index first, as the original)."""
    atomic_write_text(path, df.to_csv(lineterminator="\n"))


__all__ = ["CONCEPT_COLUMNS", "LOG_COLUMNS", "MonitorSettings", "V9Monitor", "V9Settings", "V9Trainer", "concept_row",
           "discriminator_trainable", "generator_trainable", "is_log_point", "jpeg_round_trip", "load_monitor_cnns",
           "log_row", "run_step_rule", "trainable_names", "write_concept_log", "write_inference_result",
           "write_train_log"]
