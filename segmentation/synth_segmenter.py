"""The synthface default face parser: a compact U-Net trained on rendered faces and their exact masks.

Interface (the same as the FaceXFormer backend of stage 3): the model takes ImageNet-normalised
RGB crops ``[B, 3, S, S]`` (S = 224 in stage 3) and returns parsing logits ``[B, 11, S, S]``
over the FaceXFormer classes (``synthface.renderer.CLASS_NAMES``). Inside, the crop is resized
(bilinear, antialiased) to the working resolution (128, the synthface image size) and parsed
there, so the network never spends work on upsampled pixels. The logits go back to the crop size
by nearest neighbour on pixel centres (``nearest_index``: the rule of PIL's NEAREST and OpenCV's
INTER_NEAREST_EXACT, by which the true masks are resized too), so the 224 map is the 128-px
decision on the truth's grid. (Bilinear resizing of the logits instead shifts every boundary
toward the less confident side and erodes the thin classes: on held-out renders the mean IoU fell
from 0.944 to 0.885, brows and lips most; see docs/notes/segmenter.md.)

Network (``ParsingUNet``): input RGB plus two coordinate channels (x, y in [-1, 1]: left and right
eye / eyebrow are told apart by position), a full-resolution stem, four stride-2 encoder levels
(conv-BN-ReLU x 2 each) down to 8x8 at 128 px, and a decoder that upsamples (bilinear),
concatenates the skip and applies one conv-BN-ReLU per level, then a 1x1 head. Default widths
16-32-64-96-128: 788,299 parameters (3.0 MiB as float32), 0.55 GMAC per 128-px image (torchinfo).

Training (``train_segmenter``): an endless seeded stream of ``render(truth(z))`` images with
their masks, degraded by ``augment`` so that the parser also reads the softer output of the
generator (see :class:`AugmentSettings`); loss = cross-entropy weighted by share^-0.25 + soft Dice
(mean over classes, so the small classes count as much as skin and hair); the head bias starts at
the log class shares; AdamW with a one-cycle schedule;
checkpoints every ``ckpt_every`` steps and resumes exactly (every random draw is a function
of ``(seed, step)``).

Scoring (``confusion_matrix``, ``iou_scores``): per-class IoU from the confusion matrix summed
over all pixels of all images (dataset-level IoU), mean over the 11 classes.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from pipeline.io import atomic_write_json
from pipeline.checkpoint import CheckpointError, load_state_dict_strict, read_checkpoint, save_checkpoint

NUM_CLASSES = 11
CROP_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHECKPOINT_FORMAT = "synthface-segmenter-v1"


# --------------------------------------------------------------------------------------- model

@dataclass
class SegmenterConfig:
    widths: tuple = (16, 32, 64, 96, 128)
    work_res: int = 128
    num_classes: int = NUM_CLASSES
    coords: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SegmenterConfig":
        known = {k: d[k] for k in ("widths", "work_res", "num_classes", "coords") if k in d}
        if "widths" in known:
            known["widths"] = tuple(int(w) for w in known["widths"])
        return cls(**known)


def _cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ParsingUNet(nn.Module):
    """[B, 3, R, R] normalised RGB at the working resolution -> logits [B, classes, R, R]."""

    def __init__(self, cfg: SegmenterConfig):
        super().__init__()
        w = tuple(cfg.widths)
        self.coords = bool(cfg.coords)
        self.stem = _cbr(3 + 2 * self.coords, w[0])
        self.down = nn.ModuleList(nn.Sequential(_cbr(w[i], w[i + 1], 2), _cbr(w[i + 1], w[i + 1]))
                                  for i in range(len(w) - 1))
        self.up = nn.ModuleList(_cbr(w[i + 1] + w[i], w[i]) for i in range(len(w) - 1))
        self.head = nn.Conv2d(w[0], cfg.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.coords:
            b, _, h, w = x.shape
            ys = torch.linspace(-1.0, 1.0, h, dtype=x.dtype, device=x.device).view(1, 1, h, 1).expand(b, 1, h, w)
            xs = torch.linspace(-1.0, 1.0, w, dtype=x.dtype, device=x.device).view(1, 1, 1, w).expand(b, 1, h, w)
            x = torch.cat([x, xs, ys], 1)
        feats = [self.stem(x)]
        for d in self.down:
            feats.append(d(feats[-1]))
        y = feats[-1]
        for i in reversed(range(len(self.up))):
            y = F.interpolate(y, size=feats[i].shape[-2:], mode="bilinear", align_corners=False)
            y = self.up[i](torch.cat([y, feats[i]], 1))
        return self.head(y)


@lru_cache(maxsize=16)
def nearest_index(n_in: int, n_out: int) -> torch.Tensor:
    """Source index of each of ``n_out`` output pixels: OpenCV's INTER_NEAREST_EXACT (= PIL NEAREST) rule.

    (torch's ``nearest-exact`` rounds the exact ties the other way, e.g. 128 -> 224 output pixel 3.)"""
    row = np.arange(n_in, dtype=np.float32)[None, :]
    return torch.from_numpy(cv2.resize(row, (n_out, 1), interpolation=cv2.INTER_NEAREST_EXACT)[0].astype(np.int64))


class SynthSegmenter(nn.Module):
    """ImageNet-normalised crops [B, 3, S, S] (any S) -> parsing logits [B, classes, S, S]."""

    def __init__(self, cfg: SegmenterConfig | None = None):
        super().__init__()
        self.cfg = cfg or SegmenterConfig()
        self.net = ParsingUNet(self.cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        r = self.cfg.work_res
        if tuple(size) != (r, r):
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
        logits = self.net(x)
        if tuple(size) != (r, r):
            logits = logits.index_select(2, nearest_index(r, int(size[0]))).index_select(3, nearest_index(r, int(size[1])))
        return logits


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------- I/O

def segmenter_state(model: SynthSegmenter, meta: dict | None = None) -> dict:
    return {"format": CHECKPOINT_FORMAT, "config": model.cfg.to_dict(),
            "state_dict": {k: v.detach().to(torch.float32) if v.is_floating_point() else v
                           for k, v in model.state_dict().items()},
            "meta": json.dumps(meta or {}, sort_keys=True)}


def save_segmenter(model: SynthSegmenter, path: str | Path, meta: dict | None = None) -> None:
    save_checkpoint(segmenter_state(model, meta), path)


def load_segmenter(path: str | Path, missing_hint: str = "") -> SynthSegmenter:
    """The shipped (or any saved) segmenter, loaded strictly (``weights_only=True``), in eval mode."""
    path = Path(path)
    hint = missing_hint or ("The synthface segmenter weights ship with the repository (restore them with "
                            "git checkout) or are rebuilt by: python -m synthface.train_segmenter")
    ckpt = read_checkpoint(path, missing_hint=hint)
    if ckpt.get("format") != CHECKPOINT_FORMAT or "state_dict" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path} is not a synthface segmenter checkpoint (format {ckpt.get('format')!r}, "
                              f"keys {sorted(map(str, ckpt))}; expected format {CHECKPOINT_FORMAT!r} with "
                              f"'config' and 'state_dict')")
    model = SynthSegmenter(SegmenterConfig.from_dict(ckpt["config"]))
    load_state_dict_strict(model, ckpt["state_dict"], what=f"segmenter {path}")
    return model.eval().requires_grad_(False)


def checkpoint_meta(path: str | Path) -> dict:
    return json.loads(read_checkpoint(Path(path)).get("meta", "{}"))


# --------------------------------------------------------------------------------------- crops and parsing

def normalise(images_uint8_nhwc) -> torch.Tensor:
    """uint8 NHWC RGB -> float32 NCHW, ImageNet mean / std (as torchvision ToTensor + Normalize)."""
    x = torch.from_numpy(np.array(images_uint8_nhwc, dtype=np.uint8)).permute(0, 3, 1, 2).float().div(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def resize_bicubic(image_uint8: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """PIL bicubic resize to size x size (what torchvision's Resize does on a PIL image)."""
    if image_uint8.shape[:2] == (size, size):
        return np.ascontiguousarray(image_uint8)
    return np.asarray(Image.fromarray(image_uint8).resize((size, size), Image.BICUBIC))


def whole_frame_crops(images, size: int = CROP_SIZE) -> np.ndarray:
    """The whole aligned frame of each image resized to ``size`` (bicubic): uint8 [N, size, size, 3]."""
    return np.stack([resize_bicubic(np.asarray(im), size) for im in images])


def resize_mask_nearest(mask: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Class-id mask -> size x size, nearest neighbour on pixel centres (PIL's NEAREST convention)."""
    if mask.shape[:2] == (size, size):
        return np.ascontiguousarray(mask)
    return cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST_EXACT)


@torch.inference_mode()
def parse_crops(model: nn.Module, crops_uint8, batch_size: int = 32) -> np.ndarray:
    """uint8 crops [N, S, S, 3] -> uint8 class maps [N, S, S] (argmax of the logits)."""
    out = []
    for i in range(0, len(crops_uint8), batch_size):
        logits = model(normalise(crops_uint8[i:i + batch_size]))
        out.append(logits.argmax(1).to(torch.uint8).numpy())
    return np.concatenate(out) if out else np.zeros((0,) + tuple(np.shape(crops_uint8)[1:3]), np.uint8)


# --------------------------------------------------------------------------------------- scoring

def confusion_matrix(pred: np.ndarray, true: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """[true, pred] pixel counts (int64) over all pixels of all images."""
    pred = np.asarray(pred, dtype=np.int64).ravel()
    true = np.asarray(true, dtype=np.int64).ravel()
    if pred.shape != true.shape:
        raise ValueError(f"prediction and truth differ in size: {pred.size} vs {true.size}")
    return np.bincount(true * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def iou_scores(cm: np.ndarray, class_names=None) -> dict:
    """Per-class IoU = TP / (TP + FP + FN) from a confusion matrix; classes absent from both
    truth and prediction get None and are left out of the mean."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(tp))]
    per = {n: (float(tp[i] / union[i]) if union[i] > 0 else None) for i, n in enumerate(names)}
    vals = [v for v in per.values() if v is not None]
    return {"mean_iou": float(np.mean(vals)) if vals else None, "per_class": per,
            "pixel_accuracy": float(tp.sum() / max(cm.sum(), 1.0))}


def per_image_mean_iou(pred: np.ndarray, true: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Mean IoU of each image over the classes present in its truth or prediction: float32 [N]."""
    n = len(pred)
    p = np.asarray(pred, np.int64).reshape(n, -1)
    t = np.asarray(true, np.int64).reshape(n, -1)
    off = (np.arange(n, dtype=np.int64) * num_classes ** 2)[:, None]
    cm = np.bincount((off + t * num_classes + p).ravel(), minlength=n * num_classes ** 2)
    cm = cm.reshape(n, num_classes, num_classes).astype(np.float64)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    union = cm.sum(1) + cm.sum(2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    return np.nanmean(iou, axis=1).astype(np.float32)


# --------------------------------------------------------------------------------------- augmentation

@dataclass
class AugmentSettings:
    """Degradations that cover the gap between crisp renders and generated images G(z)
    (softer edges, lost texture, slight colour shifts, ringing). Applied per image, each with
    its own probability; the defaults were chosen on a development stream of G(z)
    (``DEV_G_SEED``), never on the evaluation stream."""
    p_soften: float = 0.85          # one of: Gaussian blur / down-up resize (else the crisp render)
    blur_sigma: tuple = (0.4, 2.2)  # px at 128
    p_resize: float = 0.35          # share of the softening that is a down-up resize instead of a blur
    resize_scale: tuple = (0.35, 0.75)
    p_smooth: float = 0.3           # edge-preserving smoothing (texture loss of hair and background)
    p_color: float = 0.8
    brightness: float = 0.12        # multiplicative, +-
    contrast: float = 0.18
    saturation: float = 0.25
    channel_gain: float = 0.06
    p_jpeg: float = 0.4
    jpeg_quality: tuple = (35, 90)
    p_noise: float = 0.4
    noise_sigma: tuple = (1.0, 7.0)  # uint8 levels

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


NO_AUGMENT = AugmentSettings(p_soften=0.0, p_smooth=0.0, p_color=0.0, p_jpeg=0.0, p_noise=0.0)


def augment(rgb: np.ndarray, rng: np.random.Generator, s: AugmentSettings) -> np.ndarray:
    """Degrade a batch of uint8 RGB images [N, H, W, 3] (the masks stay exact)."""
    out = np.empty_like(rgb)
    for i in range(len(rgb)):
        out[i] = _augment_one(rgb[i], rng, s)
    return out


def _augment_one(img: np.ndarray, rng: np.random.Generator, s: AugmentSettings) -> np.ndarray:
    h, w = img.shape[:2]
    x = img
    if rng.random() < s.p_smooth:
        x = cv2.bilateralFilter(x, 5, float(rng.uniform(20, 60)), float(rng.uniform(2, 5)))
    if rng.random() < s.p_soften:
        if rng.random() < s.p_resize:
            f = rng.uniform(*s.resize_scale)
            small = cv2.resize(x, (max(8, int(round(w * f))), max(8, int(round(h * f)))), interpolation=cv2.INTER_AREA)
            x = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR if rng.random() < 0.5 else cv2.INTER_CUBIC)
        else:
            sig = rng.uniform(*s.blur_sigma)
            x = cv2.GaussianBlur(x, (0, 0), sigmaX=sig, sigmaY=sig * rng.uniform(0.8, 1.25))
    xf = x.astype(np.float32)
    if rng.random() < s.p_color:
        grey = xf.mean(axis=2, keepdims=True)
        xf = grey + (xf - grey) * (1.0 + rng.uniform(-s.saturation, s.saturation))
        m = xf.mean()
        xf = m + (xf - m) * (1.0 + rng.uniform(-s.contrast, s.contrast))
        gain = (1.0 + rng.uniform(-s.brightness, s.brightness)) * (1.0 + rng.uniform(-s.channel_gain, s.channel_gain, 3))
        xf = xf * gain.astype(np.float32)
    if rng.random() < s.p_noise:
        xf = xf + rng.normal(0.0, rng.uniform(*s.noise_sigma), xf.shape).astype(np.float32)
    x = np.clip(xf + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < s.p_jpeg:
        ok, buf = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(*s.jpeg_quality))])
        x = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return x


# --------------------------------------------------------------------------------------- training

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
        from synthface.renderer import render_batch
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
    from pipeline.vocabulary import CLASS_NAMES
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
    if n_gen:
        from stylegan.sampling import generate_uint8
        from synthface.renderer import render_batch
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
    import matplotlib.pyplot as plt

    from pipeline.reports import save_figure
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
