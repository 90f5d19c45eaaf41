"""The four filter CNNs of stage 2: gender, quality, age and glasses (spec 02 §1.4).

Every net takes the whole RGB image in [0, 1] (uint8 / 255, no mean/std
normalisation), crops its region inside ``forward`` and returns one probability
(female / good quality / old / glasses):

=========  ======================================  ================================================
property   crop (fractions of the resolution R)    layers (c = conv3 + LReLU + Dropout2d, p = pool)
=========  ======================================  ================================================
gender     whole image                             c32 c64 p c128 p c128 p c256 p c256 p
quality    rows [0, R/4), cols [R/4, 3R/4)         c32 c64 p c128 p c128 p c256
age        rows [0, R/2), all columns              c32 c64 p c128 p c128 p c256 p c256
glass      rows [80R/256, R/2), cols [R/4, 3R/4)   c32 c64 p c128 p c128 p c256
=========  ======================================  ================================================

Block: Conv 3x3 (stride 1, bias) -> LeakyReLU(0.01) -> Dropout2d(0.05); pool = MaxPool 2x2.
Head: Linear(flat, 512) -> Tanh -> Dropout(0.45) -> Linear(512, 1) -> Sigmoid.

At the spec's settings (R = 256, ``width`` 1, ``padding`` 0) the flatten sizes are
256·6·6, 256·4·12, 256·4·12 and 256·2·12 and the gender / quality nets have
5,845,697 / 6,828,481 parameters (the v1 nets of spec 01 §2.3 have the same layers).

Two knobs exist for small CPU profiles (profile data, ``stage2`` block):

* ``width``: every conv channel count is multiplied by it (rounded, at least 1), or an
  explicit list of the conv output channels (one count per conv);
* ``padding``: 0 = the spec's unpadded convs; 1 = "same" convs. Unpadded convs need the
  crop to be big enough: at R = 128 the quality crop (32x64) and the glasses crop (24x64)
  shrink to nothing before the last conv, so the 128-px profile uses padding 1 (spatial
  sizes then only halve at each pool).

The flatten size is computed from the crop; a crop that is too small for the layer
sequence is a :class:`ValueError` naming the property, the layer and the resolution.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn as nn

from pipeline.vocabulary import FILTER_PROPERTIES

PROPERTIES = FILTER_PROPERTIES

# crop boxes as fractions of the resolution: (row0, row1, col0, col1), half-open
CROPS = {
    "gender": (Fraction(0), Fraction(1), Fraction(0), Fraction(1)),
    "quality": (Fraction(0), Fraction(1, 4), Fraction(1, 4), Fraction(3, 4)),
    "age": (Fraction(0), Fraction(1, 2), Fraction(0), Fraction(1)),
    "glass": (Fraction(80, 256), Fraction(128, 256), Fraction(1, 4), Fraction(3, 4)),
}

# layer sequences: an int = conv to that many channels (at width 1), "p" = 2x2 max-pool
LAYERS = {
    "gender": (32, 64, "p", 128, "p", 128, "p", 256, "p", 256, "p"),
    "quality": (32, 64, "p", 128, "p", 128, "p", 256),
    "age": (32, 64, "p", 128, "p", 128, "p", 256, "p", 256),
    "glass": (32, 64, "p", 128, "p", 128, "p", 256),
}

MEANING = {"gender": "female", "quality": "good quality", "age": "old", "glass": "glasses"}   # what label 1 means

HEAD_UNITS = 512
CONV_DROPOUT = 0.05
HEAD_DROPOUT = 0.45


def crop_box(prop: str, resolution: int) -> tuple[int, int, int, int]:
    """Pixel crop ``(r0, r1, c0, c1)`` (half-open) of ``prop`` at ``resolution`` (fractions floored)."""
    if prop not in CROPS:
        raise ValueError(f"unknown property {prop!r}; expected one of {', '.join(PROPERTIES)}")
    r = int(resolution)
    return tuple(int(f * r) for f in CROPS[prop])   # int() of a non-negative Fraction floors


def conv_channels(prop: str, width) -> list[int]:
    """Output channels of each conv: ``width`` is a factor on the spec's counts or an explicit list."""
    spec = [c for c in LAYERS[prop] if c != "p"]
    if isinstance(width, (list, tuple)):
        if len(width) != len(spec) or any(int(c) < 1 for c in width):
            raise ValueError(f"{prop} CNN: explicit channels must be {len(spec)} positive counts "
                             f"(the spec's are {spec}), got {list(width)}")
        return [int(c) for c in width]
    if not float(width) > 0:
        raise ValueError(f"width must be > 0, got {width}")
    return [max(1, int(round(c * float(width)))) for c in spec]


@dataclass(frozen=True)
class ArchInfo:
    prop: str
    resolution: int
    crop: tuple[int, int, int, int]
    width: float | tuple      # factor on the spec's channel counts, or the explicit counts
    padding: int
    shapes: tuple            # (name, C, H, W) after each layer, starting with the crop
    flatten: int


def arch_info(prop: str, resolution: int, width: float = 1.0, padding: int = 0) -> ArchInfo:
    """Layer-by-layer output shapes; raises ValueError when a layer's output would be empty."""
    if padding not in (0, 1):
        raise ValueError(f"padding must be 0 (the spec's valid convs) or 1 (same convs), got {padding}")
    chans = iter(conv_channels(prop, width))
    r0, r1, c0, c1 = crop_box(prop, resolution)
    c, h, w = 3, r1 - r0, c1 - c0
    shapes = [("crop", c, h, w)]
    conv_i = pool_i = 0
    for layer in LAYERS[prop]:
        if layer == "p":
            pool_i += 1
            h, w, name = h // 2, w // 2, f"pool{pool_i}"
        else:
            conv_i += 1
            c = next(chans)
            h, w, name = h - 2 + 2 * padding, w - 2 + 2 * padding, f"conv{conv_i}"
        if h < 1 or w < 1:
            raise ValueError(
                f"{prop} CNN: the {r1 - r0}x{c1 - c0} crop at resolution {resolution} shrinks to "
                f"{max(h, 0)}x{max(w, 0)} at layer {name} (padding {padding}); use a larger resolution "
                f"or padding 1 (profile stage2.padding)")
        shapes.append((name, c, h, w))
    width = tuple(int(c) for c in width) if isinstance(width, (list, tuple)) else float(width)
    return ArchInfo(prop, int(resolution), (r0, r1, c0, c1), width, int(padding), tuple(shapes), c * h * w)


class FilterCNN(nn.Module):
    """One of the four stage-2 CNNs (see the module docstring)."""

    def __init__(self, prop: str, resolution: int = 256, width=1.0, padding: int = 0):
        super().__init__()
        self.info = arch_info(prop, resolution, width, padding)
        self.prop = prop
        self.resolution = int(resolution)
        layers: list[nn.Module] = []
        chans = iter(conv_channels(prop, width))
        cin = 3
        for layer in LAYERS[prop]:
            if layer == "p":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                cout = next(chans)
                layers += [nn.Conv2d(cin, cout, 3, stride=1, padding=padding, bias=True),
                           nn.LeakyReLU(0.01), nn.Dropout2d(CONV_DROPOUT)]
                cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(self.info.flatten, HEAD_UNITS), nn.Tanh(), nn.Dropout(HEAD_DROPOUT),
                                  nn.Linear(HEAD_UNITS, 1), nn.Sigmoid())

    @property
    def crop(self) -> tuple[int, int, int, int]:
        return self.info.crop

    def crop_input(self, x: torch.Tensor) -> torch.Tensor:
        """Whole images [B, 3, R, R] -> this net's crop (works on uint8 or float tensors)."""
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (self.resolution, self.resolution):
            raise ValueError(f"{self.prop} CNN expects images [B, 3, {self.resolution}, {self.resolution}], "
                             f"got {tuple(x.shape)}")
        r0, r1, c0, c1 = self.info.crop
        return x[:, :, r0:r1, c0:c1]

    def forward_cropped(self, xc: torch.Tensor) -> torch.Tensor:
        """Already-cropped float input in [0, 1] -> probabilities [B]."""
        f = self.features(xc)
        return self.head(f.reshape(f.shape[0], -1)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Whole images [B, 3, R, R] in [0, 1] -> probabilities [B]."""
        return self.forward_cropped(self.crop_input(x))


def build_cnn(prop: str, resolution: int, width=1.0, padding: int = 0) -> FilterCNN:
    return FilterCNN(prop, resolution, width, padding)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def to_unit_float(x_u8: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1] (the spec's ``ToTensor`` convention)."""
    return x_u8.to(torch.float32).div_(255.0)
