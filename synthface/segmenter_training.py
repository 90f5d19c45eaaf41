"""Training of the synthface default face parser (:mod:`segmentation.synth_segmenter`) on rendered faces.

An endless seeded stream of ``render(truth(z))`` images with their exact masks, degraded by
``augment`` so that the parser also reads the softer output of the generator; loss =
cross-entropy weighted by share^-0.25 + soft Dice (mean over classes, so the small classes count
as much as skin and hair); the head bias starts at the log class shares; AdamW with a one-cycle
schedule; checkpoints every ``ckpt_every`` steps and resumes exactly (every random draw is a
function of ``(seed, step)``). Entry point: ``python -m synthface.train_segmenter``.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.checkpoint import read_checkpoint, save_checkpoint
from pipeline.io import atomic_write_json
from pipeline.reports import save_figure
from pipeline.vocabulary import CLASS_NAMES
from segmentation.synth_segmenter import (NUM_CLASSES, AugmentSettings, SegmenterConfig, SynthSegmenter, augment,
                                          confusion_matrix, iou_scores, load_segmenter, normalise, parse_crops)
from stylegan.sampling import generate_uint8

from .renderer import render_batch


@dataclass
class SegTrainSettings:
    steps: int = 2000
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    pct_start: float = 0.1
    dice_weight: float = 1.0
    class_weight_power: float = 0.25  # cross-entropy weight of class c ~ share_c ** -power (0: unweighted)
    seed: int = 0
    augment: bool = True
    val_every: int = 200
    val_size: int = 192
    ckpt_every: int = 100
    log_every: int = 10
    threads: int = 1
    widths: tuple = (16, 32, 64, 96, 128)
    generated_share: float = 0.0      # share of each batch that is G(z) beside the true mask of render(P(z))
    init_weights: str = ""            # start from this segmenter checkpoint (adaptation) instead of scratch
    aug: dict = field(default_factory=lambda: AugmentSettings().to_dict())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


TRAIN_STREAM = 0          # z stream of the training batches: rng([seed, TRAIN_STREAM, step])
VAL_STREAM = 1            # held-out validation renders: rng([seed, VAL_STREAM])
PRIOR_STREAM = 2          # renders for the class shares (loss weights, head-bias init): rng([seed, PRIOR_STREAM])
GEN_STREAM = 3            # z of the generated share of a batch: rng([seed, GEN_STREAM, step])
DEV_G_SEED = 31_337       # development stream of G(z) for monitoring / choosing augmentations (not the eval stream)


class RenderStream:
    """Seeded batches of (rgb uint8 [N, R, R, 3], mask uint8 [N, R, R]) of ``render(truth(z))``."""

    def __init__(self, world, resolution: int = 128):
        self.world = world
        self.resolution = int(resolution)

    def batch(self, rng: np.random.Generator, n: int):
        z = rng.standard_normal((n, self.world.z_dim), dtype=np.float32)
        return render_batch(self.world.truth(z), resolution=self.resolution)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of the batch-level soft Dice coefficient."""
    p = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    inter = (p * onehot).sum((0, 2, 3))
    denom = p.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1.0 - ((2.0 * inter + eps) / (denom + eps)).mean()


def _to_train_tensors(rgb: np.ndarray, mask: np.ndarray):
    return normalise(rgb), torch.from_numpy(mask.astype(np.int64))


@torch.inference_mode()
def validate(model: SynthSegmenter, images: np.ndarray, masks: np.ndarray, batch_size: int = 64) -> dict:
    """IoU of the model at its working resolution on uint8 images [N, R, R, 3] vs masks [N, R, R]."""
    was = model.training
    model.eval()
    pred = parse_crops(model, images, batch_size)
    model.train(was)
    return iou_scores(confusion_matrix(pred, masks), CLASS_NAMES)


def train_segmenter(world, out_dir: Path, s: SegTrainSettings, show_progress: bool = True,
                    stop_after: int | None = None, dev_set: tuple | None = None, generator=None) -> dict:
    """Run (or resume) the training in ``out_dir``; ``stop_after`` ends this call after that step
    (with a checkpoint), as an interruption would. ``dev_set`` = (images, masks) of generated
    images to monitor (IoU logged at every validation, never used for the loss).

    With ``generated_share`` > 0, that share of every batch is ``generator(z)`` (un-augmented)
    paired with the true mask of ``render(truth(z))`` for z of its own seeded stream: the parser
    adapts to the images stage 3 actually parses, still supervised by the renderer's masks."""
    torch.set_num_threads(s.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    aug = AugmentSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in s.aug.items()})
    stream = RenderStream(world, 128)
    _, prior_masks = stream.batch(np.random.default_rng([s.seed, PRIOR_STREAM]), 256)
    share = np.bincount(prior_masks.ravel(), minlength=NUM_CLASSES).astype(np.float64) / prior_masks.size
    share = np.maximum(share, 1e-5)
    class_weight = torch.tensor(share ** -s.class_weight_power, dtype=torch.float32)
    torch.manual_seed(s.seed)
    n_gen = int(round(s.batch_size * s.generated_share))
    if n_gen and generator is None:
        raise ValueError("generated_share > 0 needs the generator")
    if s.init_weights:
        model = load_segmenter(s.init_weights).train().requires_grad_(True)
        if tuple(model.cfg.widths) != tuple(s.widths):
            raise ValueError(f"{s.init_weights} has widths {model.cfg.widths}, the settings say {s.widths}")
    else:
        model = SynthSegmenter(SegmenterConfig(widths=tuple(s.widths))).train()
        with torch.no_grad():                   # start calibrated: softmax of the head bias = the class shares
            model.net.head.bias.copy_(torch.tensor(np.log(share), dtype=torch.float32))
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=s.steps, pct_start=s.pct_start)
    val_rgb, val_mask = stream.batch(np.random.default_rng([s.seed, VAL_STREAM]), s.val_size)
    val_aug = augment(val_rgb, np.random.default_rng([s.seed, VAL_STREAM, 1]), AugmentSettings())
    state_path = out_dir / "train_state.pth"
    log_path = out_dir / "train_log.json"
    step, log, val_log = 0, [], []
    if state_path.is_file():
        st = read_checkpoint(state_path)
        if json.loads(st["settings"]) != json.loads(json.dumps(s.to_dict())):
            raise ValueError(f"{state_path} was made with other training settings; use another --out or delete it")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        step = int(st["step"])
        saved = json.loads(log_path.read_text()) if log_path.is_file() else {}
        log, val_log = saved.get("train", []), saved.get("val", [])

    def checkpoint():
        save_checkpoint({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                         "step": torch.tensor(step), "settings": json.dumps(s.to_dict())}, state_path)
        atomic_write_json(log_path, {"train": log, "val": val_log})

    def run_validation():
        rec = {"step": step, "renders": validate(model, val_rgb, val_mask)["mean_iou"],
               "renders_augmented": validate(model, val_aug, val_mask)["mean_iou"]}
        if dev_set is not None:
            dev = validate(model, dev_set[0], dev_set[1])
            rec["dev_generated"] = dev["mean_iou"]
            rec["dev_generated_per_class"] = dev["per_class"]
        val_log.append(rec)

    end = s.steps if stop_after is None else min(s.steps, stop_after)
    bar = tqdm(total=s.steps, initial=step, desc="segmenter", disable=not show_progress)
    t_last = time.perf_counter()
    while step < end:
        rng = np.random.default_rng([s.seed, TRAIN_STREAM, step])
        rgb, mask = stream.batch(rng, s.batch_size - n_gen)
        if s.augment:
            rgb = augment(rgb, rng, aug)
        if n_gen:
            zg = np.random.default_rng([s.seed, GEN_STREAM, step]).standard_normal((n_gen, world.z_dim),
                                                                                   dtype=np.float32)
            with torch.inference_mode():
                g_rgb = generate_uint8(generator, zg)
            _, g_mask = render_batch(world.truth(zg), resolution=stream.resolution)
            rgb, mask = np.concatenate([rgb, g_rgb]), np.concatenate([mask, g_mask])
        t_data = time.perf_counter() - t_last
        x, y = _to_train_tensors(rgb, mask)
        logits = model.net(x)
        ce = F.cross_entropy(logits, y, weight=class_weight)
        dice = soft_dice_loss(logits, y)
        loss = ce + s.dice_weight * dice
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        now = time.perf_counter()
        rec = {"step": step, "loss": loss.item(), "ce": ce.item(), "dice": dice.item(),
               "lr": opt.param_groups[0]["lr"], "seconds": now - t_last, "data_seconds": t_data}
        if step % s.log_every == 0 or step == s.steps:
            log.append(rec)
        bar.update(1)
        bar.set_postfix(ce=f"{rec['ce']:.3f}", dice=f"{rec['dice']:.3f}")
        if step % s.val_every == 0 or step == s.steps:
            run_validation()
        if step % s.ckpt_every == 0 or step == end:
            checkpoint()
        t_last = time.perf_counter()
    bar.close()
    model.eval()
    return {"model": model, "log": log, "val_log": val_log, "step": step, "finished": step >= s.steps}


def plot_training_log(log: list, val_log: list, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    if log:
        st = [r["step"] for r in log]
        axes[0].plot(st, [r["ce"] for r in log], label="cross-entropy")
        axes[0].plot(st, [r["dice"] for r in log], label="1 - soft Dice")
        axes[0].set_yscale("log")
        axes[0].set_xlabel("step")
        axes[0].set_title("training loss (augmented renders)")
        axes[0].legend()
    if val_log:
        st = [r["step"] for r in val_log]
        for key, lab in (("renders", "renders"), ("renders_augmented", "augmented renders"),
                         ("dev_generated", "G(z), dev stream")):
            if any(key in r for r in val_log):
                axes[1].plot(st, [r.get(key) for r in val_log], marker="o", ms=3, label=lab)
        axes[1].set_xlabel("step")
        axes[1].set_ylabel("mean IoU (11 classes)")
        axes[1].set_title("validation")
        axes[1].grid(alpha=0.3)
        axes[1].legend()
    return save_figure(fig, path)
