"""The property-score CNN of stage 5 (spec 04 §3): seven property scores from one image.

Input: RGB images [B, 3, R, R] in [-1, 1] (``uint8 / 127.5 - 1``). Output: [B, 7] in the
P7 order :data:`P7` = (eyes, hair_color, hair_length, mouth, pose, background_mean,
background_std) — the order of every 7-d label and of the ``all_scores*.csv`` columns.

Six independent branches (no shared weights), each on its own crop, given as fractions
of the resolution (half-open, floored to pixels; at R = 256 exactly the original boxes):

===========  ==============================  ================================  =======
branch       rows x cols (fractions of R)    layers (c conv, P 2x2 max-pool)   outputs
===========  ==============================  ================================  =======
eyes         [3/8, 9/16) x [1/4, 3/4)        c32 c64 P c64 P c128 P             1
mouth        [5/8, 13/16) x [3/8, 5/8)       c32 c64 P c64 P c128 P             1
pose         [7/16, 5/8) x [11/32, 21/32)    c32 c64 P c64 P c128 c128          1
hair_color   whole image                     c32 c64 P c64 P (c128 P) x 3       1
hair_length  [1/2, 1) x all                  c32 c64 P c64 P (c128 P) x 2 c128  1
background   [0, 1/2) x all                  as hair_length                     2
===========  ==============================  ================================  =======

conv = Conv 3x3 (stride 1, bias) -> LeakyReLU(0.01) -> Dropout2d(0.05); head per branch =
Linear(flatten -> 256) -> Tanh -> Dropout(0.45) -> Linear(256 -> k), no output activation;
the flatten is channel-major. At R = 256, width 1, padding 0 the state dict has the
original's 86 entries in its order (branches ``eyes_score_cnn``, ``mouth_score_cnn``,
``pose_score_cnn``, ``hair_color_score_cnn``, ``hair_length_score_cnn``,
``background_score_cnn``; inside each ``conv{i}.0.*``, ``fc1.0.*``, ``fc_final.*``) and
11,516,807 parameters.

Knobs for small CPU profiles (the synthface world is 128 px):

* ``width``: a factor on every conv's channel count (rounded, at least 1), or a dict
  ``branch -> factor | list of the conv output channels``; ``head_units`` narrows the
  256-unit hidden layer;
* ``padding``: 0 = the original's unpadded convs; 1 = "same" convs. At 128 px the unpadded
  pose branch shrinks to nothing at its last conv, so 128-px profiles use padding 1.

Batched eval-mode scoring (:func:`score_images`) is here too; the training rule (spec 04 §3.3)
is :func:`training.property_cnn.train_property_cnn`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction as F

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from pipeline.checkpoint import load_state_dict_strict, read_checkpoint
from pipeline.vocabulary import CONTROLLED, PROPERTIES

P7 = PROPERTIES            # the seven property scores, in the score CSVs' order
P3 = CONTROLLED            # the three controlled properties

# branch -> (crop (row0, row1, col0, col1) as fractions, layers, outputs (names, in P7))
BRANCHES = {
    "eyes": ((F(3, 8), F(9, 16), F(1, 4), F(3, 4)), (32, 64, "P", 64, "P", 128, "P"), ("eyes",)),
    "mouth": ((F(5, 8), F(13, 16), F(3, 8), F(5, 8)), (32, 64, "P", 64, "P", 128, "P"), ("mouth",)),
    "pose": ((F(7, 16), F(5, 8), F(11, 32), F(21, 32)), (32, 64, "P", 64, "P", 128, 128), ("pose",)),
    "hair_color": ((F(0), F(1), F(0), F(1)), (32, 64, "P", 64, "P", 128, "P", 128, "P", 128, "P"), ("hair_color",)),
    "hair_length": ((F(1, 2), F(1), F(0), F(1)), (32, 64, "P", 64, "P", 128, "P", 128, "P", 128), ("hair_length",)),
    "background": ((F(0), F(1, 2), F(0), F(1)), (32, 64, "P", 64, "P", 128, "P", 128, "P", 128),
                   ("background_mean", "background_std")),
}
HEAD_UNITS = 256
CONV_DROPOUT = 0.05
HEAD_DROPOUT = 0.45
LRELU_SLOPE = 0.01


def branch_crop(branch: str, resolution: int) -> tuple[int, int, int, int]:
    """Pixel box ``(r0, r1, c0, c1)`` (half-open) of ``branch`` at ``resolution``."""
    if branch not in BRANCHES:
        raise ValueError(f"unknown branch {branch!r}; expected one of {', '.join(BRANCHES)}")
    return tuple(int(f * int(resolution)) for f in BRANCHES[branch][0])


def branch_channels(branch: str, width) -> list[int]:
    """Conv output channels of ``branch``: ``width`` is a factor, or a dict branch -> factor | list."""
    spec = [c for c in BRANCHES[branch][1] if c != "P"]
    w = width.get(branch, 1.0) if isinstance(width, dict) else width
    if isinstance(w, (list, tuple)):
        if len(w) != len(spec) or any(int(c) < 1 for c in w):
            raise ValueError(f"{branch} branch: explicit channels must be {len(spec)} positive counts "
                             f"(the original's are {spec}), got {list(w)}")
        return [int(c) for c in w]
    if not float(w) > 0:
        raise ValueError(f"{branch} branch: width must be > 0, got {w}")
    return [max(1, round(c * float(w))) for c in spec]


class PropertyBranch(nn.Module):
    """One crop's CNN: convs (each ``conv{i}`` = Sequential(Conv, LReLU, Dropout2d)), pools, head."""

    def __init__(self, branch: str, resolution: int, width=1.0, padding: int = 0, head_units: int = HEAD_UNITS):
        super().__init__()
        if padding not in (0, 1):
            raise ValueError(f"padding must be 0 (the original's valid convs) or 1 (same convs), got {padding}")
        self.branch = branch
        self.crop = branch_crop(branch, resolution)
        self.outputs = BRANCHES[branch][2]
        chans = iter(branch_channels(branch, width))
        r0, r1, c0, c1 = self.crop
        c, h, w = 3, r1 - r0, c1 - c0
        self.order: list[str] = []
        self.shapes: list[tuple] = [("crop", c, h, w)]
        counts = {"conv": 0, "pool": 0}
        for layer in BRANCHES[branch][1]:
            kind = "pool" if layer == "P" else "conv"
            counts[kind] += 1
            name = f"{kind}{counts[kind]}"
            if kind == "pool":
                module, h, w = nn.MaxPool2d(2, 2), h // 2, w // 2
            else:
                module = nn.Sequential(nn.Conv2d(c, next(chans), 3, stride=1, padding=padding, bias=True),
                                       nn.LeakyReLU(LRELU_SLOPE), nn.Dropout2d(CONV_DROPOUT))
                c, h, w = module[0].out_channels, h - 2 + 2 * padding, w - 2 + 2 * padding
            if h < 1 or w < 1:
                raise ValueError(f"{branch} branch: the {r1 - r0}x{c1 - c0} crop at resolution {resolution} "
                                 f"shrinks to nothing at layer {name} (padding {padding}); use padding 1 or a "
                                 f"larger resolution")
            self.add_module(name, module)
            self.order.append(name)
            self.shapes.append((name, c, h, w))
        self.flatten = c * h * w
        self.fc1 = nn.Sequential(nn.Linear(self.flatten, head_units), nn.Tanh(), nn.Dropout(HEAD_DROPOUT))
        self.fc_final = nn.Linear(head_units, len(self.outputs))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Whole images [B, 3, R, R] -> this branch's outputs [B, k]."""
        r0, r1, c0, c1 = self.crop
        x = images[:, :, r0:r1, c0:c1]
        for name in self.order:
            x = getattr(self, name)(x)
        return self.fc_final(self.fc1(x.flatten(1)))


class PropertyScoreCNN(nn.Module):
    """Images [B, 3, R, R] in [-1, 1] -> property scores [B, 7] in :data:`P7` order."""

    REGISTRATION_ORDER = ("eyes", "mouth", "pose", "hair_color", "hair_length", "background")

    def __init__(self, resolution: int = 256, width=1.0, padding: int = 0, head_units: int = HEAD_UNITS):
        super().__init__()
        self.resolution = int(resolution)
        self.config = {"resolution": self.resolution, "width": width, "padding": int(padding),
                       "head_units": int(head_units)}
        for b in self.REGISTRATION_ORDER:
            self.add_module(f"{b}_score_cnn", PropertyBranch(b, resolution, width, padding, head_units))
        where = {}
        for b in self.REGISTRATION_ORDER:
            for j, name in enumerate(BRANCHES[b][2]):
                where[name] = (b, j)
        self._output_index = [where[p] for p in P7]

    def branches(self) -> dict[str, PropertyBranch]:
        return {b: getattr(self, f"{b}_score_cnn") for b in self.REGISTRATION_ORDER}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        r = self.resolution
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, r, r):
            raise ValueError(f"property-score CNN expects images [B, 3, {r}, {r}] in [-1, 1], "
                             f"got {tuple(images.shape)}")
        images = images.to(torch.float32)
        outs = {b: m(images) for b, m in self.branches().items()}
        return torch.cat([outs[b][:, j:j + 1] for b, j in self._output_index], dim=1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def to_signed_nchw(x) -> torch.Tensor:
    """uint8 NCHW -> float32 in [-1, 1] (``ToTensor`` then ``Normalize(0.5, 0.5)``); float input passes through."""
    x = torch.as_tensor(x)
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div(127.5).sub(1.0)
    return x.to(torch.float32)


def load_property_cnn(path, resolution: int = 256, width=1.0, padding: int = 0,
                      head_units: int = HEAD_UNITS) -> PropertyScoreCNN:
    """Strict, ``weights_only`` load of a saved state dict; returned in eval mode with gradients off."""
    model = PropertyScoreCNN(resolution, width, padding, head_units)
    load_state_dict_strict(model, read_checkpoint(path), what=f"property-score CNN {path}")
    return model.eval().requires_grad_(False)


@torch.inference_mode()
def score_images(model: PropertyScoreCNN, images, batch_size: int = 32, progress: bool = False) -> np.ndarray:
    """Scores [N, 7] (float32, P7 order) in eval mode under ``inference_mode``.

    ``images``: anything indexable by a slice giving uint8 NCHW (or float [-1, 1]) batches —
    a tensor, an array, or a lazy loader. The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in tqdm(range(0, len(images), batch_size), desc="property scores", disable=not progress):
            out.append(model(to_signed_nchw(images[i:i + batch_size])).numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, len(P7)), np.float32)


# ------------------------------------------------------------------------------------ training

@dataclass
class PropertyCNNSettings:
    """Architecture and training settings (defaults: spec 04 §3.3)."""
    resolution: int = 256
    width: float | dict = 1.0
    padding: int = 0
    head_units: int = HEAD_UNITS
    lr: float = 5e-5
    weight_decay: float = 0.01
    batch_size: int = 16
    valid_batch_size: int = 4
    valid_fraction: float = 0.1            # train = int(N * (1 - fraction)): 4,703 -> 4,232 / 471
    t_max: int = 10                         # CosineAnnealingLR, stepped once per epoch
    patience: int = 20                      # stop when this many epochs pass without a new best
    max_epochs: int | None = None           # None: the early-stopping rule only (the original)
    seed: int = 0
    selection_exclude: tuple = ("background_std",)   # left out of the early-stopping criterion
    val_log_samples: int = 30               # first N validation images logged per epoch

    def validate(self) -> None:
        if not 0 < self.valid_fraction < 1:
            raise ValueError(f"valid_fraction must be in (0, 1), got {self.valid_fraction}")
        for name in ("batch_size", "valid_batch_size", "t_max", "patience"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1 or None, got {self.max_epochs}")
        unknown = set(self.selection_exclude) - set(P7)
        if unknown:
            raise ValueError(f"selection_exclude names unknown properties {sorted(unknown)}")

    def build(self) -> PropertyScoreCNN:
        return PropertyScoreCNN(self.resolution, self.width, self.padding, self.head_units)

    def to_dict(self) -> dict:
        return asdict(self)
