"""What both property-score algorithms share: class ids, defaults, fallback flags, the map geometry,
the result type and the vectorised helpers (channel sums, masked histograms, trimmed statistics,
row / column extents). The algorithms: :mod:`segmentation.property_scores` (2nd, with the
hairstyle score) and :mod:`segmentation.property_scores_v1` (1st)."""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from pipeline.vocabulary import PROPERTIES

BACKGROUND, SKIN, EYE_L, EYE_R, NOSE, UPPER_LIP, INNER_MOUTH, LOWER_LIP, HAIR = 0, 1, 4, 5, 6, 7, 8, 9, 10
NUM_CLASSES = 11
# the seven properties of the spec's CSVs, in their column order
V2_COLUMNS = PROPERTIES + ("hairstyle",)

HAIR_COLOR_DEFAULT = 127.5
BACKGROUND_DEFAULT = (192.0, 0.0)
HAIRSTYLE_DEFAULT = 0.45
HAIRSTYLE_EPS = 5.0            # ratio = V / (H + 5)
FALLBACK_DEFAULTS = {"hair_color": HAIR_COLOR_DEFAULT, "background_mean": BACKGROUND_DEFAULT[0],
                     "background_std": BACKGROUND_DEFAULT[1], "hairstyle": HAIRSTYLE_DEFAULT,
                     "pose": 0.0, "mouth": 0.0, "hair_length_v1": 0.0}
_NBINS = 3 * 255 + 1           # channel sums 0..765

# every flag a ScoreBatch may carry: (kind, meaning). "fallback" = a default value replaced the
# measurement (or part of it); "condition" = a notable but regular case, counted for the report.
FLAGS = {
    "eye4_missing": ("fallback", "no class-4 pixel in its eye window: that eye contributes 0 to eyes"),
    "eye5_missing": ("fallback", "no class-5 pixel in its eye window: that eye contributes 0 to eyes"),
    "eye4_single_pixel": ("fallback", "one class-4 pixel: tilt cos set to 1 (height 0)"),
    "eye5_single_pixel": ("fallback", "one class-5 pixel: tilt cos set to 1 (height 0)"),
    "eyes_zero": ("condition", "eyes = 0 (no eye, or height x cos = 0 for both eyes)"),
    "eye4_stray_pixels_removed": ("condition", "option 'largest': class-4 pixels off the largest component dropped"),
    "eye5_stray_pixels_removed": ("condition", "option 'largest': class-5 pixels off the largest component dropped"),
    "pose_eye_missing": ("fallback", "an eye class is missing: pose = 0.0"),
    "pose_equal_column_centroids": ("fallback", "eye centroids share a column: pose = 0.0 (original: inf/NaN)"),
    "hair_color_no_hair": ("fallback", "no hair pixel: hair colour = 127.5"),
    "hair_color_trim_empty": ("fallback", "hair pixels but none kept by the 10 %-90 % trim: hair colour = 127.5"),
    "hair_length_no_hair": ("condition", "no hair pixel (hair length 0)"),
    "mouth_no_lips": ("fallback", "no lip or inner-mouth pixel: mouth = 0"),
    "mouth_closed": ("condition", "lips but no inner-mouth pixel (mouth = 0)"),
    "background_none": ("fallback", "no background pixel in the upper half: (192.0, 0.0)"),
    "background_single_pixel": ("fallback", "one background pixel in the upper half: (its value, 0.0)"),
    "background_single_kept": ("fallback", "one value left after the 5 %-95 % trim: (it, 0.0)"),
    "background_uniform": ("condition", "upper background of one grey level (std 0)"),
    "hairstyle_no_position": ("fallback", "no accepted hair position: hairstyle = 0.45"),
    "v1_hair_color_no_hair": ("fallback", "1st algorithm, no hair pixel: hair colour = 127.5 (original: crash)"),
    "v1_hair_length_no_hair": ("fallback", "1st algorithm, no hair pixel: hair length = 0.0 (original: undefined)"),
    "v1_pose_no_nose": ("fallback", "1st algorithm, no nose pixel: pose = 0.0 (original: NaN)"),
    "v1_pose_undefined": ("fallback", "1st algorithm, nose without row or column spread: pose = 0.0 (original: NaN)"),
}


@dataclass(frozen=True)
class Geometry:
    """Windows and pixel amounts for an S x S map (spec values at S = 224)."""

    size: int = 224

    def __post_init__(self):
        if int(self.size) < 16:
            raise ValueError(f"map size must be >= 16, got {self.size}")

    @staticmethod
    def _scaled(v224: int, s: int) -> int:
        return max(1, int(round(v224 * s / 224.0)))

    @property
    def quarter(self) -> int:            # 56
        return self.size // 4

    @property
    def half(self) -> int:               # 112
        return self.size // 2

    @property
    def three_quarters(self) -> int:     # 168
        return 3 * self.size // 4

    @property
    def v1_eye_rows(self) -> tuple[int, int]:     # [56, 140)
        return self.quarter, self.quarter + 3 * self.size // 8

    @property
    def v2_eye_rows(self) -> tuple[int, int]:     # [56, 168)
        return self.quarter, self.three_quarters

    @property
    def eye_cols(self) -> dict:                   # class 4: [0, 168), class 5: [56, 224)
        return {EYE_L: (0, self.three_quarters), EYE_R: (self.quarter, self.size)}

    @property
    def hair_row_threshold(self) -> int:          # T = 20
        return self._scaled(20, self.size)

    @property
    def hair_bonus_offset(self) -> int:           # T // 2 = 10
        return self.hair_row_threshold // 2

    @property
    def hairstyle_block(self) -> int:             # 4
        return self._scaled(4, self.size)

    @property
    def hairstyle_offset(self) -> int:            # 8
        return self._scaled(8, self.size)

    def to_dict(self) -> dict:
        return {"size": self.size, "v1_eye_rows": list(self.v1_eye_rows), "v2_eye_rows": list(self.v2_eye_rows),
                "eye_cols": {str(k): list(v) for k, v in self.eye_cols.items()},
                "upper_half_rows": [0, self.half], "hair_length_rows": [self.quarter, self.size],
                "hair_row_threshold": self.hair_row_threshold, "hair_bonus_offset": self.hair_bonus_offset,
                "hairstyle_block": self.hairstyle_block, "hairstyle_offset": self.hairstyle_offset}


@dataclass
class ScoreBatch:
    """Raw values (float64 [N] per property) and fallback flags (bool [N] per fallback)."""

    values: dict = field(default_factory=dict)
    fallbacks: dict = field(default_factory=dict)

    def fallback_names(self, i: int) -> list[str]:
        """The fallbacks that fired for image ``i`` (sorted names)."""
        return sorted(k for k, v in self.fallbacks.items() if v[i])

    def counts(self) -> dict:
        return {k: int(np.count_nonzero(v)) for k, v in sorted(self.fallbacks.items())}


# ------------------------------------------------------------------------------------ helpers

def _check(maps: np.ndarray, images: np.ndarray | None = None) -> Geometry:
    if maps.ndim != 3 or maps.shape[1] != maps.shape[2]:
        raise ValueError(f"maps must be [N, S, S], got {maps.shape}")
    if images is not None and (images.ndim != 4 or images.shape[:3] != maps.shape or images.shape[3] != 3):
        raise ValueError(f"images must be [N, S, S, 3] matching maps {maps.shape}, got {images.shape}")
    return Geometry(int(maps.shape[1]))


def channel_sum(images: np.ndarray) -> np.ndarray:
    """Sum of the three channels, uint16 [N, S, S] (= 3 g, an integer in 0..765)."""
    out = images[..., 0].astype(np.uint16)
    out += images[..., 1]
    out += images[..., 2]
    return out


def _histograms(csum: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-image histogram of channel sums over ``mask``: int64 [N, 766] (OpenCV, one call per image)."""
    csum = np.ascontiguousarray(csum, dtype=np.uint16)
    m8 = np.ascontiguousarray(mask).view(np.uint8)
    out = np.empty((csum.shape[0], _NBINS), np.int64)
    for i in range(csum.shape[0]):
        out[i] = cv2.calcHist([csum[i]], [0], m8[i], [_NBINS], [0, _NBINS]).ravel()
    return out


def _trimmed(hist: np.ndarray, lo_frac: float, hi_frac: float):
    """Mean and population std of the sorted values at positions [int(lo n), int(hi n)).

    Returns (mean, std, n, kept) with mean/std NaN where nothing is kept. ``int(frac * n)``
    is evaluated as the original did (float64 product, truncation).
    """
    n = hist.sum(axis=1)
    lo = np.floor(lo_frac * n.astype(np.float64)).astype(np.int64)
    hi = np.floor(hi_frac * n.astype(np.float64)).astype(np.int64)
    cum = np.cumsum(hist, axis=1)
    start = cum - hist
    kept_per_bin = np.clip(np.minimum(cum, hi[:, None]) - np.maximum(start, lo[:, None]), 0, None)
    kept = hi - lo
    vals = np.arange(_NBINS, dtype=np.float64) / 3.0
    with np.errstate(invalid="ignore", divide="ignore"):
        total = kept_per_bin @ np.arange(_NBINS, dtype=np.int64)           # exact integer sum of 3 g
        mean = total / (3.0 * kept)
        dev = vals[None, :] - mean[:, None]
        var = (kept_per_bin * dev * dev).sum(axis=1) / kept
    return mean, np.sqrt(var), n, kept


def _median(hist: np.ndarray) -> np.ndarray:
    """np.median of the values in each histogram (mean of the two middle values for even n)."""
    n = hist.sum(axis=1)
    cum = np.cumsum(hist, axis=1)
    lo_pos = np.maximum((n - 1) // 2, 0)
    hi_pos = n // 2
    b_lo = (cum <= lo_pos[:, None]).sum(axis=1)
    b_hi = (cum <= hi_pos[:, None]).sum(axis=1)
    med = (np.minimum(b_lo, _NBINS - 1) / 3.0 + np.minimum(b_hi, _NBINS - 1) / 3.0) / 2.0
    return np.where(n > 0, med, np.nan)


def _first_last(mask: np.ndarray, axis: int):
    """Index of the first / last True along ``axis`` and whether there is any."""
    anyv = mask.any(axis=axis)
    first = np.argmax(mask, axis=axis)
    last = mask.shape[axis] - 1 - np.argmax(np.flip(mask, axis=axis), axis=axis)
    return first, last, anyv


def _row_extent(mask: np.ndarray) -> np.ndarray:
    """(last - first) row containing a True, 0 if none: int [N] for mask [N, R, C]."""
    rows = mask.any(axis=2)
    first, last, anyv = _first_last(rows, axis=1)
    return np.where(anyv, last - first, 0)


def background(maps: np.ndarray, csum: np.ndarray, geom: Geometry):
    """Background mean / population std of g over class-0 pixels of the upper half, 5 %-95 % trimmed.

    n = 0 -> (192, 0); n = 1 -> (the value, 0); one value kept -> (it, 0) (what the formula gives).
    """
    h = geom.half
    mask = maps[:, :h] == BACKGROUND
    hist = _histograms(csum[:, :h], mask)
    mean, std, n, kept = _trimmed(hist, 0.05, 0.95)
    single = n == 1
    none = n == 0
    mean = np.where(single, np.argmax(hist, axis=1) / 3.0, mean)
    mean = np.where(none, BACKGROUND_DEFAULT[0], mean)
    std = np.where(single | none, BACKGROUND_DEFAULT[1], std)
    fb = {"background_none": none, "background_single_pixel": single,
          "background_single_kept": (n >= 2) & (kept == 1), "background_uniform": (n >= 1) & (std == 0.0)}
    return mean.astype(np.float64), std.astype(np.float64), fb
