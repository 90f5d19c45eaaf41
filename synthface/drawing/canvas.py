"""The renderer's parameter table, class ids, colour ramps, cached assets and the drawing canvas
(anti-aliased RGB and aliased id map drawn with the same sub-pixel polygons)."""
from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np


# name -> (low, high, default)
PARAM_SPEC: dict[str, tuple[float, float, float]] = {
    "female": (0.0, 1.0, 1.0),
    "quality_defect": (0.0, 1.0, 0.0),
    "defect_severity": (0.0, 1.0, 0.5),
    "age": (0.0, 1.0, 0.15),
    "glasses": (0.0, 1.0, 0.0),
    "glasses_style": (0.0, 1.0, 0.3),
    "eyes_open": (0.0, 1.0, 0.65),
    "mouth_open": (0.0, 1.0, 0.0),
    "pose": (-1.0, 1.0, 0.0),
    "hair_color": (0.0, 1.0, 0.3),
    "hair_grey": (0.0, 1.0, 0.0),
    "hair_length": (0.0, 1.0, 0.6),
    "hairstyle": (0.0, 1.0, 0.2),
    "hair_part": (0.0, 1.0, 0.5),
    "bg_mean": (0.0, 1.0, 0.5),
    "bg_std": (0.0, 1.0, 0.05),
    "bg_hue": (0.0, 1.0, 0.3),
    "bg_tex_a": (0.0, 1.0, 0.0),
    "bg_tex_b": (0.0, 1.0, 0.0),
    "skin_tone": (0.0, 1.0, 0.3),
    "face_width": (0.0, 1.0, 0.5),
    "jaw": (0.0, 1.0, 0.5),
    "beard": (0.0, 1.0, 0.5),
    "brow": (0.0, 1.0, 0.5),
    "lip_color": (0.0, 1.0, 0.5),
    "iris_color": (0.0, 1.0, 0.2),
    "light_dir": (0.0, 1.0, 0.3),
    "light_strength": (0.0, 1.0, 0.5),
    "head_dx": (-1.0, 1.0, 0.0),
    "head_dy": (-1.0, 1.0, 0.0),
    "head_scale": (-1.0, 1.0, 0.0),
    "cloth_color": (0.0, 1.0, 0.2),
}
PARAM_NAMES = list(PARAM_SPEC)
DEFAULTS = {k: v[2] for k, v in PARAM_SPEC.items()}


# internal ids: the 11 classes plus 11 = clothes (mask 0, but lit like the person)
_CLOTH = 11
_ID_TO_CLASS = np.arange(256, dtype=np.uint8)
_ID_TO_CLASS[_CLOTH] = 0

_SH = 4                     # sub-pixel bits of every polygon vertex
_ONE = float(1 << _SH)
_AA = cv2.LINE_AA
_L8 = cv2.LINE_8

BG_AMP_SPAN = math.exp(3.4) - 1.0   # background texture amplitude (grey std) 1 .. e^3.4 ~ 30, linear in bg_std
ROLL_MAX = math.radians(22.0)   # in-plane head tilt at |pose| = 1
FACE_CY = 0.52                  # vertical position of the face centre (fraction of the image)

# --------------------------------------------------------------------------------------- colours


def _ramp(stops):
    xs = np.array([s[0] for s in stops], dtype=np.float64)
    cs = np.array([s[1] for s in stops], dtype=np.float64)

    def f(v):
        return np.array([np.interp(v, xs, cs[:, k]) for k in range(3)])
    return f


_SKIN = _ramp([(0.0, (250, 218, 198)), (0.3, (238, 190, 158)), (0.6, (200, 143, 106)), (0.8, (158, 104, 72)),
               (1.0, (104, 66, 46))])
_HAIR = _ramp([(0.0, (20, 16, 15)), (0.18, (48, 32, 24)), (0.36, (88, 57, 37)), (0.52, (128, 78, 44)),
               (0.66, (162, 116, 68)), (0.8, (205, 165, 105)), (0.92, (230, 205, 150)), (1.0, (242, 232, 200))])
_IRIS = _ramp([(0.0, (62, 38, 24)), (0.3, (110, 70, 36)), (0.5, (118, 104, 52)), (0.7, (70, 118, 84)),
               (0.85, (70, 120, 170)), (1.0, (130, 160, 190))])
_LIPS = _ramp([(0.0, (214, 128, 128)), (0.35, (204, 92, 98)), (0.65, (178, 52, 66)), (1.0, (128, 40, 70))])
_CLOTHES = _ramp([(0.0, (34, 46, 82)), (0.15, (235, 235, 232)), (0.3, (30, 30, 34)), (0.45, (120, 124, 130)),
                  (0.6, (120, 32, 44)), (0.75, (36, 110, 110)), (0.9, (196, 170, 130)), (1.0, (190, 150, 40))])
_BG_TINT = _ramp([(0.0, (1.0, 1.0, 1.0)), (0.2, (1.12, 1.0, 0.86)), (0.4, (0.86, 0.98, 1.18)),
                  (0.6, (0.92, 1.1, 0.96)), (0.8, (1.12, 0.92, 0.98)), (1.0, (1.0, 1.0, 1.0))])


def _col(c):
    return (float(c[0]), float(c[1]), float(c[2]))


def _mix(a, b, t):
    return a + (b - a) * t


# --------------------------------------------------------------------------------------- assets

@lru_cache(maxsize=8)
def _assets(res: int) -> dict:
    """Per-resolution constants: coordinate grids and the seeded texture banks."""
    rng = np.random.default_rng(20250411 + res)
    yy, xx = np.mgrid[0:res, 0:res].astype(np.float32)
    X = (xx + 0.5) / res
    Y = (yy + 0.5) / res

    def smooth(sigma_x, sigma_y, n=1):
        out = []
        for _ in range(n):
            a = rng.standard_normal((res, res)).astype(np.float32)
            a = cv2.GaussianBlur(a, (0, 0), sigmaX=max(sigma_x, 0.3), sigmaY=max(sigma_y, 0.3),
                                 borderType=cv2.BORDER_REFLECT)
            a -= a.mean()
            a /= a.std() + 1e-8
            out.append(a)
        return out

    # background: 4 uncorrelated smooth fields (blurry-scene blobs) + a little fine grain each
    bg = []
    for f_lo, f_hi in zip(smooth(res / 12, res / 12, 4), smooth(res / 48, res / 48, 4)):
        t = 0.85 * f_lo + 0.5 * f_hi
        bg.append((t - t.mean()) / t.std())
    # straight hair: thin vertical strands (period ~ 4-5 px at 128) with slow variation along y
    strands = smooth(res / 170, res / 9)[0]
    strands = np.tanh(1.2 * strands)
    # curly hair: ringlets, an isotropic band-pass field made into crests
    c1, c2 = smooth(res / 70, res / 70, 2)
    curls = np.sin(2.2 * c1) + 0.6 * np.sin(1.7 * c2)
    curls = (curls - curls.mean()) / curls.std()
    return {
        "X": X, "Y": Y,
        "bg": np.stack(bg).astype(np.float32),
        "strands": strands.astype(np.float32),
        "curls": curls.astype(np.float32),
        "blob": _gauss_patch(33),
    }


def _gauss_patch(n: int) -> np.ndarray:
    t = np.linspace(-2.2, 2.2, n, dtype=np.float32)
    g = np.exp(-0.5 * (t[:, None] ** 2 + t[None, :] ** 2))
    g = (g - g.min()) / (g.max() - g.min())
    return g.astype(np.float32)


@lru_cache(maxsize=4)
def _circle(k: int):
    t = np.linspace(0.0, 2.0 * np.pi, k, endpoint=False)
    return np.cos(t), np.sin(t)


_U12 = np.linspace(-1.0, 1.0, 12)
_U9 = np.linspace(-1.0, 1.0, 9)

# --------------------------------------------------------------------------------------- drawing context


class _Canvas:
    """RGB + id canvas and the head transform (local face coordinates -> pixels)."""

    __slots__ = ("res", "rgb", "ids", "m", "px", "lw")
    # m = (m00, m01, m02, m10, m11, m12): rotation * scale and translation, in 1/16 pixels

    def __init__(self, res: int, rgb: np.ndarray):
        self.res = res
        self.rgb = rgb
        self.ids = np.zeros((res, res), np.uint8)
        self.px = res * _ONE
        self.lw = max(1, int(round(res / 128.0)))

    def set_head(self, cx, cy, scale, angle):
        c, s = math.cos(angle) * scale, math.sin(angle) * scale
        k = self.px
        self.m = (c * k, -s * k, cx * k, s * k, c * k, cy * k)

    def local(self, x, y):
        """Head-local coordinates (fractions of the image, face centre at 0) -> int32 vertices [K, 2]."""
        m00, m01, m02, m10, m11, m12 = self.m
        out = np.empty((len(x), 2), np.float64)
        out[:, 0] = m00 * x + m01 * y + m02
        out[:, 1] = m10 * x + m11 * y + m12
        return out.astype(np.int32)

    def image(self, x, y):
        """Image coordinates (fractions) -> int32 vertices."""
        return np.stack([np.asarray(x) * self.px, np.asarray(y) * self.px], -1).astype(np.int32)

    def fill(self, pts, color, cls=None):
        cv2.fillPoly(self.rgb, [pts], color, _AA, _SH)
        if cls is not None:
            cv2.fillPoly(self.ids, [pts], cls, _L8, _SH)

    def fill_covered(self, pts, color, cls):
        """As :meth:`fill`, but the class goes only to pixels the polygon covers at least half
        (coverage measured on an 8x8 sub-pixel grid), so a polygon thinner than a pixel marks no
        pixel instead of a one-pixel line."""
        cv2.fillPoly(self.rgb, [pts], color, _AA, _SH)
        x0, y0 = np.maximum((pts.min(0) >> _SH) - 1, 0)
        x1, y1 = np.minimum((pts.max(0) >> _SH) + 2, self.res)
        if x1 > x0 and y1 > y0:
            h, w = y1 - y0, x1 - x0
            sub = np.zeros((8 * h, 8 * w), np.uint8)     # vertices in 1/16 px = 1/2 of a sub-pixel
            cv2.fillPoly(sub, [pts - np.array([x0 << _SH, y0 << _SH], np.int32)], 1, _L8, _SH - 3)
            cover = sub.reshape(h, 8, w, 8).sum(axis=(1, 3))
            self.ids[y0:y1, x0:x1][cover >= 32] = cls

    def line(self, pts, color, thick=1, closed=False):
        cv2.polylines(self.rgb, [pts], closed, color, max(1, int(round(thick * self.lw))), _AA, _SH)

    def to_px(self, x, y):
        """Head-local point -> image fractions."""
        m00, m01, m02, m10, m11, m12 = self.m
        return (m00 * x + m01 * y + m02) / self.px, (m10 * x + m11 * y + m12) / self.px


def _ellipse(cv, cx, cy, rx, ry, k=20, rot=0.0):
    c, s = _circle(k)
    if rot:
        cr, sr = math.cos(rot), math.sin(rot)
        x, y = rx * c, ry * s
        return cv.local(cx + cr * x - sr * y, cy + sr * x + cr * y)
    return cv.local(cx + rx * c, cy + ry * s)


def _soft(cv: _Canvas, cx, cy, rx, ry, color, alpha, only_id=None):
    """Blend a soft Gaussian blob (image-fraction centre/radii) into the RGB image."""
    res = cv.res
    x0, x1 = int(math.floor((cx - rx) * res)), int(math.ceil((cx + rx) * res))
    y0, y1 = int(math.floor((cy - ry) * res)), int(math.ceil((cy + ry) * res))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    blob = cv2.resize(_assets(res)["blob"], (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, res), min(y1, res)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    a = blob[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] * alpha
    if only_id is not None:
        a = a * (cv.ids[cy0:cy1, cx0:cx1] == only_id)
    roi = cv.rgb[cy0:cy1, cx0:cx1].astype(np.float32)
    roi += a[..., None] * (np.asarray(color, np.float32) - roi)
    cv.rgb[cy0:cy1, cx0:cx1] = roi.astype(np.uint8)
