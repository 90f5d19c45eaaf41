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

Training (``synthface.segmenter_training.train_segmenter``): an endless seeded stream of ``render(truth(z))`` images with
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
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

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


def for_inference(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with its 4-D weights in channels-last layout, in place (values unchanged).
    oneDNN runs these convolutions 1.3-1.4x faster per batch in that layout on this CPU; the class
    maps equalled the NCHW ones on 96 stage-1 images (4.8 M pixels). Call it outside inference mode
    (weights made inside it could not be trained later)."""
    return model.eval().to(memory_format=torch.channels_last)


def _layout_of(model: nn.Module) -> torch.memory_format:
    w = next((p for p in model.parameters() if p.ndim == 4), None)
    cl = w is not None and w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


@torch.inference_mode()
def parse_crops(model: nn.Module, crops_uint8, batch_size: int = 32) -> np.ndarray:
    """uint8 crops [N, S, S, 3] -> uint8 class maps [N, S, S] (argmax of the logits). The input
    takes the model's weight layout (channels-last after :func:`for_inference`)."""
    layout = _layout_of(model)
    out = []
    for i in range(0, len(crops_uint8), batch_size):
        logits = model(normalise(crops_uint8[i:i + batch_size]).contiguous(memory_format=layout))
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
