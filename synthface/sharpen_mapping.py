"""Sharpening the default generator's binary factors in its mapping network (synthesis untouched).

    python -m synthface.sharpen_mapping                       # the profile's G -> runs/<profile>/sharpen_mapping
    python -m synthface.sharpen_mapping --generator G.pth --out DIR --steps 3000

Why (ISSUES.md #16): the regression-trained generator draws gender, glasses, age and the
quality defect right far from the world's decision boundaries and wrong close to them: on the
1,000 held-out z every gender error lies within 0.5 latent units of the threshold. The mapping
network encodes the smooth latent factor, so w crosses from "male" to "female" over a band,
and the synthesis draws the in-between w as either. The synthesis itself draws each class
cleanly when w is clearly on one side.

What: for each binary factor k, the class-mean direction d_k of w (mean w of the positive
class minus that of the negative class, fitted on ``n_fit`` z of a seeded stream) gives a
coordinate c_k(w) = (w - midpoint_k) . d_k / |d_k|^2 (about -0.5 for a typical negative w,
+0.5 for a typical positive one). The target of a z is its current w moved, with the least
change in the span of the d_k, so that every c_k lies on the side truth(z) says with at
least ``margin``:  w*(z) = w(z) + D^T (D D^T)^-1 (c* - c),  c*_k = s_k max(s_k c_k, margin),
s_k = +1 for a positive z, -1 otherwise. The mapping network (the StyleGAN class's, same
architecture and keys) is then regressed onto w*(z) on fresh seeded z each step (MSE in w,
plus ``coord_weight`` x MSE of the c coordinates, which carry the decisions). No image is
rendered during training: a step takes milliseconds. ``w_avg`` is re-estimated afterwards.
Validation: the independent evaluator on G(z) for ``n_val`` z of a stream used by nothing else.

Outputs in ``--out``: ``generator.pth`` ({'generator': state dict}, loads strictly into the
profile's class), ``metrics.json`` (settings, directions' fit, before/after validation),
``train_log.json``, ``report.md`` with the loss curve.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.io import atomic_write_json, sha256_file
from pipeline.profiles import load_profile
from pipeline.reports import save_figure, write_report
from pipeline.checkpoint import read_checkpoint, save_checkpoint
from stylegan.sampling import build_generator
from synthface.evaluate_generator import flat_scores, load_or_train_evaluator, measure_fidelity
from synthface.truth import world as world_map

BINARY_FACTORS = ["female", "glasses", "old", "quality_defect"]
FIT_SEED = 931_000          # z stream of the direction fit
TRAIN_SEED = 932_000        # z streams of the training batches: [TRAIN_SEED, step]
VAL_SEED = 933_000          # validation z (the held-out evaluation stream 777_000 stays untouched)


@dataclass
class SharpenSettings:
    margin: float = 0.5          # minimum |c_k| on the true side
    positive_margins: str = "glasses=1.0,quality_defect=1.5"   # larger margins for the rare positives
    steps: int = 15000
    batch_size: int = 512
    lr: float = 0.1              # Adam on the stored (equalised-lr) mapping weights, x 1/lr_mul
    coord_weight: float = 10.0
    n_fit: int = 20000
    n_val: int = 500
    threads: int = 2
    seed: int = 0

    def margins(self, names=BINARY_FACTORS) -> tuple[np.ndarray, np.ndarray]:
        """(negative-side, positive-side) minimum |c| per factor."""
        pos = {n: self.margin for n in names}
        for item in filter(None, (t.strip() for t in self.positive_margins.split(","))):
            name, _, value = item.partition("=")
            if name not in pos or not value:
                raise ValueError(f"positive_margins: expected name=value with a name in {list(names)}, got {item!r}")
            pos[name] = float(value)
        return np.full(len(names), self.margin), np.array([pos[n] for n in names])


class Directions:
    """Class-mean directions of the binary factors in w and the target map w -> w*."""

    def __init__(self, d: np.ndarray, mid: np.ndarray, names: list[str]):
        self.names = list(names)
        self.n = (d / (d * d).sum(1, keepdims=True)).astype(np.float64)        # [K, w_dim]
        self.offset = (mid * self.n).sum(1)                                      # c = w.n - offset
        self.gram_inv_n = np.linalg.solve(self.n @ self.n.T, self.n)             # (N N^T)^-1 N

    @classmethod
    def fit(cls, w: np.ndarray, labels: dict, names=BINARY_FACTORS) -> "Directions":
        d, mid = [], []
        for n in names:
            y = np.asarray(labels[n]) > 0.5
            if y.all() or not y.any():
                raise ValueError(f"factor {n!r} has a single class in the fit sample")
            mp, mn = w[y].mean(0), w[~y].mean(0)
            d.append(mp - mn)
            mid.append((mp + mn) / 2)
        return cls(np.array(d, np.float64), np.array(mid, np.float64), names)

    def coords(self, w: np.ndarray) -> np.ndarray:
        return w @ self.n.T - self.offset

    def target(self, w: np.ndarray, labels: dict, margin, positive_margin=None) -> np.ndarray:
        """w moved least (in the directions' span) so every coordinate is on the true side by at least
        ``margin`` (negatives) / ``positive_margin`` (positives; default: ``margin``); scalars or per factor."""
        c = self.coords(w.astype(np.float64))
        pos = np.stack([np.asarray(labels[n]) > 0.5 for n in self.names], 1)
        s = np.where(pos, 1.0, -1.0)
        m_neg = np.broadcast_to(np.asarray(margin, np.float64), (len(self.names),))
        m_pos = m_neg if positive_margin is None else np.broadcast_to(np.asarray(positive_margin, np.float64),
                                                                      (len(self.names),))
        c_star = s * np.maximum(s * c, np.where(pos, m_pos, m_neg))
        return (w + (c_star - c) @ self.gram_inv_n).astype(np.float32)

    def agreement(self, w: np.ndarray, labels: dict) -> dict:
        c = self.coords(w.astype(np.float64))
        return {n: float(((c[:, i] > 0) == (np.asarray(labels[n]) > 0.5)).mean()) for i, n in enumerate(self.names)}


def _w(mapping, z: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return mapping(torch.from_numpy(z))["w"].numpy()


def _labels(world, z):
    t = world.truth(z)
    return {n: t[n].to_numpy(np.float32) for n in BINARY_FACTORS}


def validate(g, world, ev, z: np.ndarray, resolution: int) -> dict:
    fid = measure_fidelity(g, world, ev, z, resolution)
    return {**flat_scores(fid["generator"]), "pixel_mae_uint8": round(fid["pixel_mae_uint8"], 3)}


def sharpen_mapping(g, world, s: SharpenSettings, *, show_progress: bool = True, state_path: Path | None = None,
                    ckpt_every: int = 2500, stop_after: int | None = None):
    """A copy of ``g`` whose mapping is regressed onto the sharpened targets; returns (g_new, info, log).

    With ``state_path`` the loop saves its state (mapping, optimiser, schedule, log) every
    ``ckpt_every`` steps and resumes from it when the settings match (batches are seeded by step,
    so a resumed run ends with the same weights); ``stop_after`` interrupts it (tests)."""
    torch.manual_seed(s.seed)
    m_neg, m_pos = s.margins()
    z_dim = world.z_dim
    z_fit = np.random.default_rng(FIT_SEED).standard_normal((s.n_fit, z_dim), dtype=np.float32)
    w_fit = _w(g.mapping, z_fit)
    lab_fit = _labels(world, z_fit)
    dirs = Directions.fit(w_fit, lab_fit)
    before = dirs.agreement(w_fit, lab_fit)
    frozen = copy.deepcopy(g.mapping).eval().requires_grad_(False)
    g_new = copy.deepcopy(g)
    mapping = g_new.mapping.train().requires_grad_(True)
    lr_mul = min(m.lr_mul for m in mapping.modules() if hasattr(m, "lr_mul"))
    opt = torch.optim.Adam(mapping.parameters(), lr=s.lr / lr_mul, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s.steps)
    n_t = torch.as_tensor(dirs.n, dtype=torch.float32)
    log, start = [], 0
    if state_path is not None and Path(state_path).is_file():
        st = read_checkpoint(state_path)
        if st["settings"] != asdict(s):
            raise ValueError(f"{state_path} was written with other settings ({st['settings']}); "
                             f"delete it or use another --out")
        mapping.load_state_dict(st["mapping"], strict=True)
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        start, log = int(st["step"]), [dict(r) for r in st["log"]]

    def checkpoint(done: int):
        save_checkpoint({"settings": asdict(s), "step": done, "mapping": mapping.state_dict(),
                         "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "log": log}, state_path)

    bar = tqdm(range(start, s.steps), desc="sharpen mapping", disable=not show_progress,
               initial=start, total=s.steps)
    for step in bar:
        if stop_after is not None and step >= stop_after:
            checkpoint(step)
            return None, None, log
        z = np.random.default_rng([TRAIN_SEED, step]).standard_normal((s.batch_size, z_dim), dtype=np.float32)
        target = torch.from_numpy(dirs.target(_w(frozen, z), _labels(world, z), m_neg, m_pos))
        w = mapping(torch.from_numpy(z))["w"]
        loss_w = F.mse_loss(w, target)
        loss_c = F.mse_loss(w @ n_t.T, target @ n_t.T)
        loss = loss_w + s.coord_weight * loss_c
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == s.steps - 1:
            log.append({"step": step, "loss": round(loss.item(), 5), "loss_w": round(loss_w.item(), 5),
                        "loss_c": round(loss_c.item(), 6)})
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if state_path is not None and (step + 1) % ckpt_every == 0 and step + 1 < s.steps:
            checkpoint(step + 1)
    mapping.eval().requires_grad_(False)
    g_new.requires_grad_(False).eval()
    w_after = _w(mapping, z_fit)
    with torch.inference_mode():
        g_new.truncation.w_avg.copy_(torch.from_numpy(w_after.mean(0)))
    info = {"direction_sign_agreement_before": before, "direction_sign_agreement_after": dirs.agreement(w_after, lab_fit),
            "mean_abs_w_change": float(np.linalg.norm(w_after - w_fit, axis=1).mean()),
            "mean_w_norm": float(np.linalg.norm(w_fit, axis=1).mean())}
    return g_new, info, log


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="synthface")
    ap.add_argument("--generator", default=None, help="a generator checkpoint instead of the profile's")
    ap.add_argument("--out", default=None)
    for k, v in asdict(SharpenSettings()).items():
        ap.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    s = SharpenSettings(**{k: getattr(args, k) for k in asdict(SharpenSettings())})
    torch.set_num_threads(s.threads)

    profile = load_profile(args.profile)
    if args.generator:
        profile = type(profile)({**profile, "generator_checkpoint": str(Path(args.generator).resolve())})
    out = Path(args.out) if args.out else profile.stage_dir("sharpen_mapping")
    out.mkdir(parents=True, exist_ok=True)
    if (out / "generator.pth").is_file() and (out / "metrics.json").is_file():
        done = json.loads((out / "metrics.json").read_text())
        if done.get("settings") == asdict(s):
            print(f"{out / 'generator.pth'} is finished with these settings; nothing to do")
            return done
    world = world_map(profile["generator"]["z_dim"], profile["world_seed"])
    ev = load_or_train_evaluator(world, profile["resolution"])
    g = build_generator(profile)
    z_val = np.random.default_rng(VAL_SEED).standard_normal((s.n_val, world.z_dim), dtype=np.float32)
    t0 = time.perf_counter()
    val_before = validate(g, world, ev, z_val, profile["resolution"])
    g_new, info, log = sharpen_mapping(g, world, s, show_progress=not args.no_progress,
                                       state_path=out / "sharpen_state.pth")
    val_after = validate(g_new, world, ev, z_val, profile["resolution"])
    save_checkpoint({"generator": g_new.state_dict()}, out / "generator.pth")
    atomic_write_json(out / "train_log.json", log)
    metrics = {"settings": asdict(s), "source_generator": str(profile["generator_checkpoint"]),
               "source_sha256": sha256_file(profile.path(profile["generator_checkpoint"])), **info,
               "validation_before": val_before, "validation_after": val_after,
               "seconds": round(time.perf_counter() - t0, 1)}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogy([r["step"] for r in log], [r["loss_w"] for r in log], label="MSE(w, w*)")
    ax.semilogy([r["step"] for r in log], [r["loss_c"] for r in log], label="MSE(c, c*)")
    ax.set_xlabel("step")
    ax.legend()
    png = save_figure(fig, out / "report" / "loss.png")
    rows = "\n".join(f"| {k} | {val_before[k]} | {val_after[k]} |" for k in val_before)
    write_report(out, "Mapping sharpening", [
        ("Source and settings", f"Source: `{profile['generator_checkpoint']}`; settings: `{asdict(s)}`."),
        ("Validation", f"Independent evaluator on {s.n_val} validation z (stream {VAL_SEED}):\n\n"
                       f"| factor | before | after |\n|---|---|---|\n{rows}"),
        ("Training", f"![loss]({png.relative_to(out)})")])
    atomic_write_json(out / "metrics.json", metrics)          # last: marks the run finished
    (out / "sharpen_state.pth").unlink(missing_ok=True)
    print({"before": val_before, "after": val_after})
    return metrics


if __name__ == "__main__":
    main()
