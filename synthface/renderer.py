"""Procedural face renderer of the synthface world.

``render(params)`` draws one aligned, frontal-ish portrait (default 128x128) from a
parameter record and returns ``(rgb, mask)``: an RGB uint8 image and the exact
per-pixel face-parsing mask with the FaceXFormer class ids (0 background, 1 skin,
2 left eyebrow, 3 right eyebrow, 4 left eye, 5 right eye, 6 nose, 7 upper lip,
8 inner mouth, 9 lower lip, 10 hair). "Left" / "right" are *image* left / right
(class 4 is the eye with the smaller column), which is what the stage-4 property
algorithms assume. ``render_batch(table)`` does the same for every row of a table
(a pandas DataFrame or a dict of equal-length arrays).

Drawing: OpenCV polygons in painter's order, anti-aliased in the RGB image and
drawn with the *same* vertices (no anti-aliasing) into the mask: background,
clothes, hair behind the head, neck and ears, face, skin details, hair fringe and
side locks, eyebrows, eyes, nose, lips and inner mouth, then one lighting /
hair-texture pass, then glasses and the quality defect.

Mask conventions (decisions, documented here once):

* neck and ears are skin (1); clothes are background (0);
* the eye class covers the whole eye opening (sclera, iris, pupil); the inner mouth
  covers teeth and tongue and only the pixels its polygon covers at least half, so the
  class-8 area grows from zero as the mouth opens; a closed mouth (``mouth_open == 0``)
  and a barely open one have no class-8 pixel;
* RGB-only details leave the mask alone: wrinkles, blush, beard shadow, eyelashes,
  lid lines, nostrils, earrings, and **glasses** (frames and lenses: the eye, brow and
  skin classes underneath stay the mask truth) and the **quality defect** (the mask
  keeps the clean geometry under the blurred strip);
* anti-aliased edge pixels belong to the class whose polygon covers their centre.

Geometry is in fractions of the image size, so every resolution (64, 128, 256,
...) shows the same face; the layout follows the stage-4 windows (eyes in rows
[H/4, 3H/4), class 4 in columns [0, 3W/4), class 5 in [W/4, W); eyes ~13 px wide
and the mouth ~22-25 px wide at 128 px). Nothing is random at render time: the
textures come from fixed, seeded banks (one per resolution) and are selected by
continuous parameters, so the same parameters give byte-identical images.

Parameters (every value a float; missing keys take the default; values outside
the range are clipped):

==================  =========  =======  =====================================================
name                range      default  meaning
==================  =========  =======  =====================================================
female              0 .. 1     1        1 female, 0 male (in between blends the cues): jaw,
                                        brows, lashes / liner, lipstick, blush, beard shadow
quality_defect      0 / 1      0        1 = blurred, smeared top strip (rows [0, H/4) fully, fading
                                        out by H/3; columns fading out toward the edges)
defect_severity     0 .. 1     0.5      strength of the defect (only with quality_defect)
age                 0 .. 1     0.15     apparent age; >= 0.5 reads "old": wrinkles, eye bags,
                                        jowls, thinner lips, mouth corners down
glasses             0 / 1      0        glasses on (RGB only; frames around both eyes)
glasses_style       0 .. 1     0.3      frame: thick dark rectangular .. brown .. thin round metal
eyes_open           0 .. 1     0.65     eye opening; eye-mask height grows monotonically
                                        (0 = nearly closed lid line, 1 = wide open)
mouth_open          0 .. 1     0        0 = closed (no inner-mouth pixel); any value > 0 opens the lips by
                                        at least ~1 px (at 128 px), up to a wide open smile at 1
pose                -1 .. 1    0        head turn: in-plane tilt (slope between the eye
                                        centroids grows with pose) plus a horizontal shift of
                                        the features toward image right (> 0) / left (< 0)
hair_color          0 .. 1     0.3      black, dark brown, brown, auburn, blonde, platinum
hair_grey           0 .. 1     0        greying of the hair (and brows)
hair_length         0 .. 1     0.6      cropped .. chin .. shoulder .. reaching the bottom edge on both
                                        sides (from about 0.83)
hairstyle           0 .. 1     0.2      0 straight (vertical strands) .. 1 curly (wavy outline,
                                        ringlet texture, more volume)
hair_part           0 .. 1     0.5      parting position / fringe sweep (nuisance)
bg_mean             0 .. 1     0.5      background brightness (channel mean ~ 25 + 215 * v)
bg_std              0 .. 1     0.05     background texture amplitude (grey std ~ 1 + 29 v)
bg_hue              0 .. 1     0.3      background tint (nuisance)
bg_tex_a, bg_tex_b  0 .. 1     0.0      background texture pattern (periodic angles; nuisance)
skin_tone           0 .. 1     0.3      light .. dark skin
face_width          0 .. 1     0.5      narrow .. wide face
jaw                 0 .. 1     0.5      soft / pointed .. square jaw (stronger for males)
beard               0 .. 1     0.5      beard shadow / stubble strength (males only)
brow                0 .. 1     0.5      eyebrow thickness and arch (nuisance)
lip_color           0 .. 1     0.5      pale pink .. red .. berry
iris_color          0 .. 1     0.2      dark brown .. hazel .. green .. blue
light_dir           0 .. 1     0.3      light direction angle (fraction of a turn)
light_strength      0 .. 1     0.5      strength of the directional light
head_dx, head_dy    -1 .. 1    0        small position jitter of the head
head_scale          -1 .. 1    0        small scale jitter of the head (+-5 %)
cloth_color         0 .. 1     0.2      clothes colour (nuisance)
==================  =========  =======  =====================================================

Speed (one core, rgb + mask): ~1,000 images/s at 128 px, ~1,200 at 64, ~450 at 256
(``benchmarks/bench_renderer.py``).
"""
from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from pipeline.vocabulary import CLASS_NAMES, PALETTE

__all__ = ["PARAM_SPEC", "PARAM_NAMES", "DEFAULTS", "CLASS_NAMES", "PALETTE", "render", "render_batch",
           "colorize_mask", "contact_sheet"]

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


# --------------------------------------------------------------------------------------- the face


def _params(p) -> dict:
    out = dict(DEFAULTS)
    for k, v in p.items():
        if k in out:
            lo, hi, _ = PARAM_SPEC[k]
            v = float(v)
            out[k] = hi if v > hi else (lo if v < lo else v)
    return out


class _Face:
    """Derived per-face quantities shared by the drawing steps."""

    def __init__(self, p: dict, res: int):
        self.p = p
        self.res = res
        fem = self.fem = p["female"]
        male = self.male = 1.0 - fem
        self.old = old = min(max((p["age"] - 0.35) / 0.5, 0.0), 1.0)     # visible ageing, 0 below age 0.35
        self.yaw = p["pose"]
        self.curly = curly = p["hairstyle"]
        self.hl = hl = p["hair_length"]
        # placement
        self.scale = 1.0 + 0.05 * p["head_scale"]
        self.hx = 0.5 + 0.025 * p["head_dx"]
        self.hy = FACE_CY + 0.02 * p["head_dy"]
        # colours (RGB float arrays)
        skin = _SKIN(p["skin_tone"])
        skin = _mix(skin, skin * 0.96 + 8.0, old * 0.6)
        self.skin = skin
        self.skin_sh = skin * np.array([0.80, 0.74, 0.74])
        self.skin_dk = skin * np.array([0.62, 0.52, 0.50])
        hair = _HAIR(p["hair_color"])
        grey = np.array([196.0, 196.0, 198.0]) * (0.85 + 0.15 * p["hair_color"])
        self.hair = _mix(hair, grey, p["hair_grey"] * 0.9)
        brow = _mix(self.hair * 0.68, np.array([92.0, 70.0, 52.0]), 0.45 * max(p["hair_color"] - 0.55, 0.0) / 0.45)
        self.brow_c = _mix(brow, self.skin_sh, 0.12)
        lips = _LIPS(p["lip_color"])
        lips = _mix(skin * np.array([0.88, 0.68, 0.68]), lips, 0.2 + 0.8 * fem)
        self.lips = _mix(lips, skin * 0.82, 0.3 * old)
        self.cloth = _CLOTHES(p["cloth_color"])
        # face shape (head-local coordinates, image fractions, face centre at 0)
        self.a = 0.236 * (1.0 + 0.16 * (p["face_width"] - 0.5)) * (1.0 + 0.045 * male)
        self.bt = 0.355
        self.bl = 0.305 + 0.025 * male + 0.01 * old
        self.sq = male * (0.4 + 0.6 * p["jaw"]) + fem * 0.3 * p["jaw"]
        self.ey = -0.075                                     # eye line
        self.esep = 0.112 * (self.a / 0.236) ** 0.5          # half distance between the eye centres
        # hair
        tight = min(hl / 0.35, 1.0)
        self.ah = self.a * (1.02 + 0.05 * tight) + 0.004 + 0.05 * curly + 0.01 * fem
        self.hcy = -0.07
        self.bh = 0.378 + 0.012 * tight + 0.03 * curly
        self.y_end = -0.16 + 0.78 * hl                       # local y where the hair ends (>= 0.48: below the frame)
        self.wav = 0.012 * curly


def _crown(f: _Face, k: int = 23):
    """Upper outline of the hair (left equator -> top -> right equator)."""
    t = np.linspace(np.pi, 2.0 * np.pi, k)
    x, y = f.ah * np.cos(t), f.hcy + f.bh * np.sin(t)
    if f.curly > 0.01:
        r = 1.0 + 0.05 * f.curly * np.sin(t * 11.0 + 0.7) ** 2
        x, y = x * r, f.hcy + (y - f.hcy) * r
    return x, y


def _background(res: int, p: dict) -> np.ndarray:
    A = _assets(res)
    level = 25.0 + 215.0 * p["bg_mean"]
    amp = 1.0 + BG_AMP_SPAN * p["bg_std"]
    ta, tb = 2.0 * math.pi * p["bg_tex_a"], 2.0 * math.pi * p["bg_tex_b"]
    w = (math.cos(ta) * math.cos(tb), math.cos(ta) * math.sin(tb), math.sin(ta) * math.cos(tb),
         math.sin(ta) * math.sin(tb))
    bg = A["bg"]
    lum = (w[0] * amp) * bg[0] + (w[1] * amp) * bg[1] + (w[2] * amp) * bg[2] + (w[3] * amp) * bg[3]
    tint = _BG_TINT(p["bg_hue"])
    base = (level * tint / tint.mean()).astype(np.float32)
    out = np.empty((res, res, 3), np.float32)
    out[...] = lum[..., None]          # the grey texture is the same in every channel
    out += base
    return np.clip(out, 0, 255).astype(np.uint8)


def _body(cv: _Canvas, f: _Face):
    """Clothes (mask 0), not tilted with the head."""
    s, hx = f.scale, f.hx
    base_y = f.hy + 0.36 * s
    sw = 0.50 + 0.07 * f.male
    xs = hx + s * np.array([-sw, -sw, -0.40, -0.24, -0.10, 0.10, 0.24, 0.40, sw, sw])
    ys = np.array([1.05, base_y + 0.17, base_y + 0.065, base_y + 0.015, base_y, base_y, base_y + 0.015,
                   base_y + 0.065, base_y + 0.17, 1.05])
    cv.fill(cv.image(xs, ys), _col(f.cloth), _CLOTH)
    f.base_y = base_y


def _back_hair(cv: _Canvas, f: _Face):
    cx, cy = _crown(f)
    hcy, y_end, ah, curly = f.hcy, f.y_end, f.ah, f.curly
    if y_end > hcy + 0.01:
        ys = np.linspace(hcy, y_end, 12)[1:]
        d = ys - hcy
        nape = 0.08 * f.male * max(1.0 - f.hl / 0.5, 0.0) * np.clip((ys - 0.0) / 0.12, 0, 1)
        spread = (0.1 + 0.1 * max(f.hl - 0.6, 0.0)) * np.clip((ys - 0.24) / 0.25, 0.0, 1.0) ** 1.3   # on the shoulders
        x_out = (ah - 0.02 * (1.0 - curly) * np.clip(d / 0.25, 0, 1) + 0.07 * curly * np.sqrt(d / 0.6) - nape
                 + spread + f.wav * np.sin(ys * 95.0 + 1.3))
        tipd = (0.025 + 0.02 * curly) * min((y_end - hcy) / 0.2, 1.0)
        y_notch = 0.29
        if y_end > y_notch + 0.03:
            # long hair: two strands in front of the shoulders, the chest stays free
            x_in = 0.15 + 0.03 * curly
            nb = 6
            bx = np.linspace(x_out[-1], x_in, nb)
            tip = np.abs(np.sin(np.arange(nb) * 1.9 + 0.4))
            by = y_end - tipd * tip
            nx = np.array([x_in - 0.01, -x_in + 0.01])
            ny = np.array([y_notch, y_notch])
            xs = np.concatenate([cx, x_out, bx[1:], nx, -bx[::-1][:-1], -x_out[::-1]])
            ys = np.concatenate([cy, ys, by[1:], ny, by[::-1][:-1], ys[::-1]])
        else:
            nb = 9
            bx = np.linspace(x_out[-1], -x_out[-1], nb)[1:-1]
            by = y_end - tipd * np.abs(np.sin(np.arange(1, nb - 1) * 1.9 + 0.4))
            xs = np.concatenate([cx, x_out, bx, -x_out[::-1]])
            ys = np.concatenate([cy, ys, by, ys[::-1]])
    else:
        keep = cy <= max(y_end, -0.02)
        xs, ys = cx[keep], cy[keep]
    cv.fill(cv.local(xs, ys), _col(f.hair * 0.9), 10)


def _neck_ears(cv: _Canvas, f: _Face):
    nw = 0.088 + 0.022 * f.male
    base_y, hx = f.base_y, f.hx
    nx0, ny0 = cv.to_px(0.0, 0.18)
    vy = base_y + 0.05 + 0.04 * f.fem
    xs = np.array([nx0 - nw, nx0 - nw * 1.02, hx - nw * 1.3, hx - 0.05, hx, hx + 0.05, hx + nw * 1.3,
                   nx0 + nw * 1.02, nx0 + nw])
    ys = np.array([ny0, base_y - 0.05, base_y + 0.004, base_y + 0.02, vy, base_y + 0.02, base_y + 0.004,
                   base_y - 0.05, ny0])
    cv.fill(cv.image(xs, ys), _col(f.skin_sh * 0.97), 1)
    cv.fill(_ellipse(cv, 0.0, f.bl - 0.03, f.a * 0.6, 0.085, 16), _col(f.skin_sh * 0.8), 1)
    if f.y_end < 0.12 or f.male > 0.5:
        for side in (-1.0, 1.0):
            ex = side * (f.a * 0.98 + 0.012) + 0.006 * f.yaw
            cv.fill(_ellipse(cv, ex, 0.005, 0.032, 0.062, 14, rot=side * 0.15), _col(f.skin_sh * 0.95), 1)
            cv.fill(_ellipse(cv, ex + side * 0.006, 0.0, 0.013, 0.036, 10, rot=side * 0.15), _col(f.skin_dk))
            if f.fem > 0.5:
                cv.fill(_ellipse(cv, ex + side * 0.004, 0.06, 0.008, 0.008, 8), (232, 200, 90))


def _face(cv: _Canvas, f: _Face):
    a, bl, bt, sq = f.a, f.bl, f.bt, f.sq
    n = 2.0 + 0.7 * sq
    cw = 0.028 + 0.04 * sq                                   # chin half-width
    v = np.linspace(0.0, 1.0, 11)
    w = cw + (a - cw) * (1.0 - v ** n) ** (1.0 / n) * (1.0 - 0.1 * (1.0 - sq) * v ** 2)
    w = w * (1.0 + 0.06 * f.old * np.exp(-((v - 0.8) / 0.12) ** 2))
    ry = bl * v
    chin_x = np.linspace(cw, -cw, 7)[1:-1]
    chin_y = bl + (0.012 + 0.004 * f.fem) * (1.0 - (chin_x / cw) ** 2)
    t = np.linspace(np.pi, 2.0 * np.pi, 19)[1:-1]
    xs = np.concatenate([w, chin_x, -w[::-1], a * np.cos(t)])
    ys = np.concatenate([ry, chin_y, ry[::-1], bt * np.sin(t)])
    xs = xs + 0.008 * f.yaw * np.clip(1.0 - (ys / bl) ** 2, 0.0, 1.0)
    cv.fill(cv.local(xs, ys), _col(f.skin), 1)


def _wrinkles(cv: _Canvas, f: _Face):
    old, ey, esep, yaw = f.old, f.ey, f.esep, f.yaw
    wc = _col(_mix(f.skin, f.skin_dk, 0.45 * old))
    xs = np.linspace(-0.1, 0.1, 7)
    for i, yy in enumerate((-0.2, -0.228, -0.256)):
        cv.line(cv.local(xs, yy + 0.012 * (xs / 0.1) ** 2 + 0.002 * i), wc)
    for side in (-1.0, 1.0):
        x0 = side * 0.044 + 0.05 * yaw
        cv.line(cv.local(np.array([x0, x0 + side * 0.022, x0 + side * 0.045, x0 + side * 0.06]),
                         np.array([0.06, 0.11, 0.165, 0.21])), wc)
        exo = side * (esep + 0.066) + 0.035 * yaw
        for dy in (-0.012, 0.0, 0.014):
            cv.line(cv.local(np.array([exo, exo + side * 0.024]), np.array([ey + dy, ey + dy * 1.8])), wc)
        cv.line(cv.local(np.array([side * 0.07, side * 0.09, side * 0.1]) + 0.04 * yaw,
                         np.array([0.26, 0.28, 0.3])), wc)


def _front_hair(cv: _Canvas, f: _Face):
    a, hl, fem, male, curly = f.a, f.hl, f.fem, f.male, f.curly
    part = (f.p["hair_part"] - 0.5) * 0.22
    top_y = -0.29 + 0.02 * male + 0.025 * f.old * male
    temple_y = (-0.11 + 0.05 * min(hl, 0.6)) * fem + (-0.2) * male
    xs = np.linspace(a * 0.94, -a * 0.94, 15)
    span = np.where(xs > part, a - part, a + part)
    rel = np.abs(xs - part) / span
    q = 1.6 * fem + 3.0 * male
    y = top_y + (temple_y - top_y) * rel ** q
    bang_side = np.where((xs > part) == (part < 0), 1.0, 0.3)
    y = y + fem * (0.05 + 0.05 * (1.0 - hl)) * bang_side * np.sin(np.pi * np.clip(rel, 0, 1)) * 0.9
    if curly > 0.01:
        y = y + 0.014 * curly * np.sin(np.arange(15) * 2.3)
    sb = min(f.y_end, 0.0) if male > 0.5 else min(f.y_end, temple_y + 0.05)
    cx, cy = _crown(f)
    px = np.concatenate([[-a * 0.9, -a * 1.0], cx, [a * 1.0, a * 0.9], xs])
    py = np.concatenate([[sb - 0.01, sb], cy, [sb, sb - 0.01], y])
    cv.fill(cv.local(px, py), _col(f.hair), 10)
    if hl > 0.25:                                            # side locks framing the face
        lock_end = min(f.y_end, 0.32)
        lw = (0.03 + 0.035 * fem) * min((hl - 0.25) / 0.3, 1.0)
        ys = np.linspace(temple_y - 0.03, lock_end, 9)
        tt = np.clip((ys - ys[0]) / (ys[-1] - ys[0] + 1e-6), 0.0, 1.0)
        inner = a * (1.0 - 0.12 * np.clip((ys + 0.05) / 0.35, 0, 1) ** 2) - lw * np.sin(np.pi * (0.15 + 0.7 * tt))
        outer = inner + lw + 0.03 + 0.04 * curly
        wv = f.wav * np.sin(ys * 95.0)
        for side in (-1.0, 1.0):
            lx = np.concatenate([side * (inner + wv), side * (outer + wv)[::-1]])
            ly = np.concatenate([ys, ys[::-1]])
            cv.fill(cv.local(lx, ly), _col(f.hair * 0.96), 10)


def _brows(cv: _Canvas, f: _Face):
    p, fem, male, yaw = f.p, f.fem, f.male, f.yaw
    th0 = (0.011 + 0.012 * male + 0.008 * (p["brow"] - 0.5)) * (1.0 - 0.2 * f.old)
    arch = 0.012 + 0.01 * fem + 0.008 * (p["brow"] - 0.5)
    by0 = f.ey - (0.066 + 0.01 * fem - 0.006 * male)
    u = _U9
    th = th0 * (1.0 - 0.55 * ((u + 1.0) / 2.0) ** 1.5)        # thick at the inner end
    for cls, side in ((2, -1.0), (3, 1.0)):
        bx = side * (f.esep + 0.06 * u - 0.002) + 0.035 * yaw
        yc = by0 - arch * (1.0 - ((u - 0.15) / 1.15) ** 2) + 0.004 * u
        xs = np.concatenate([bx, bx[::-1]])
        ys = np.concatenate([yc - th * 0.5, (yc + th * 0.5)[::-1]])
        cv.fill(cv.local(xs, ys), _col(f.brow_c), cls)


_SCLERA = np.array([238.0, 234.0, 230.0])
_LASH = np.array([22.0, 15.0, 13.0])


def _eyes(cv: _Canvas, f: _Face):
    p, fem, yaw, res = f.p, f.fem, f.yaw, cv.res
    eo = p["eyes_open"]
    ew = 0.105 * (1.0 + 0.04 * fem)
    iris_c = _IRIS(p["iris_color"])
    sclera = _col(_SCLERA * (0.96 - 0.08 * f.old))
    lid_c = _col(_mix(f.skin_dk * 0.55, _LASH, fem))
    crease_c = _col(_mix(f.skin, f.skin_dk, 0.35))
    low_c = _col(_mix(f.skin_sh, f.skin_dk, 0.35))
    u = _U12
    for cls, side in ((4, -1.0), (5, 1.0)):
        far = max(side * yaw, 0.0)                           # the eye on the far side narrows with the turn
        w = ew * (1.0 - 0.18 * far)
        exc = side * f.esep + 0.035 * yaw
        hu = w * (0.035 + 0.42 * eo)
        hlw = w * (0.02 + 0.21 * eo)
        lift = -(0.006 * fem + 0.002) * u * side             # outer corner slightly up
        xs = exc + 0.5 * w * u
        up = f.ey - hu * (1.0 - u ** 2) ** 0.85 * (1.0 - 0.12 * u * side) + lift
        lo = f.ey + hlw * (1.0 - u ** 2) ** 1.1 + lift
        pts = cv.local(np.concatenate([xs, xs[-2:0:-1]]), np.concatenate([up, lo[-2:0:-1]]))
        cv2.fillPoly(cv.ids, [pts], cls, _L8, _SH)
        # sclera + iris, clipped to the eye opening with the anti-aliased outline as alpha
        x0, y0 = np.maximum((pts.min(0) >> _SH) - 1, 0)
        x1, y1 = np.minimum((pts.max(0) >> _SH) + 2, res)
        if x1 > x0 and y1 > y0:
            roi = cv.rgb[y0:y1, x0:x1]
            alpha = np.zeros(roi.shape[:2], np.uint8)
            off = np.array([x0 << _SH, y0 << _SH], np.int32)
            cv2.fillPoly(alpha, [pts - off], 255, _AA, _SH)
            eye = np.empty_like(roi)
            eye[...] = sclera
            gx, gy = cv.to_px(exc + 0.012 * yaw, f.ey + 0.1 * hu - 0.1 * hlw)
            ri = 0.25 * w * cv.px
            ci = (int(gx * cv.px) - int(off[0]), int(gy * cv.px) - int(off[1]))
            cv2.circle(eye, ci, int(ri), _col(iris_c), -1, _AA, _SH)
            cv2.circle(eye, ci, int(ri * 0.8), _col(iris_c * 0.7), 1, _AA, _SH)
            cv2.circle(eye, ci, int(ri * 0.46), (14, 10, 10), -1, _AA, _SH)
            cv2.circle(eye, (ci[0] + int(ri * 0.35), ci[1] - int(ri * 0.4)), int(ri * 0.26), (252, 252, 252), -1,
                       _AA, _SH)
            eye[: max(1, (y1 - y0) // 3)] = (eye[: max(1, (y1 - y0) // 3)] * 0.82).astype(np.uint8)  # lid shadow
            af = alpha.astype(np.float32)[..., None] * (1.0 / 255.0)
            roi[...] = (roi * (1.0 - af) + eye * af).astype(np.uint8)
        cv.line(cv.local(xs, up), lid_c)
        cv.line(cv.local(xs[2:-1], lo[2:-1] + 0.002), low_c)
        cv.line(cv.local(xs[1:-1], up[1:-1] - 0.016 - 0.012 * eo), crease_c)
        if fem > 0.5:                                        # lashes at the outer half of the upper lid
            j = (7, 9, 11) if side > 0 else (4, 2, 0)
            for k in j:
                cv.line(cv.local(np.array([xs[k], xs[k] + side * 0.011]), np.array([up[k], up[k] - 0.009])),
                        _col(_LASH))
        if f.old > 0.2:
            cv.line(cv.local(xs[3:-2], lo[3:-2] + 0.014 + 0.006 * f.old), _col(_mix(f.skin, f.skin_dk, 0.5 * f.old)))


def _nose(cv: _Canvas, f: _Face):
    yaw, skin, skin_sh, skin_dk = f.yaw, f.skin, f.skin_sh, f.skin_dk
    nx, ntx = 0.05 * yaw, 0.07 * yaw
    nw = 0.042 + 0.007 * f.male
    xs = np.array([-0.016, 0.016, 0.022, nw * 0.8, nw, nw * 0.7, 0.0, -nw * 0.7, -nw, -nw * 0.8, -0.022])
    xs = xs + np.array([nx, nx, nx, ntx, ntx, ntx, ntx, ntx, ntx, ntx, nx])
    ys = np.array([-0.06, -0.06, 0.0, 0.055, 0.08, 0.098, 0.104, 0.098, 0.08, 0.055, 0.0])
    cv2.fillPoly(cv.ids, [cv.local(xs, ys)], 6, _L8, _SH)
    sd = 1.0 if math.cos(2.0 * math.pi * f.p["light_dir"]) < 0 else -1.0     # side away from the light
    cv.line(cv.local(np.array([0.016 * sd + nx, 0.021 * sd + nx, 0.03 * sd + ntx]), np.array([-0.045, 0.02, 0.06])),
            _col(_mix(skin, skin_sh, 0.75)), 2)
    cv.line(cv.local(np.array([nx * 0.8, (nx + ntx) * 0.5]), np.array([-0.03, 0.05])),
            _col(np.minimum(skin * 1.07 + 10, 255)))
    nost = _col(skin_dk * 0.62)
    wing = _col(_mix(skin_sh, skin_dk, 0.5))
    for side in (-1.0, 1.0):
        cv.fill(_ellipse(cv, side * 0.019 + ntx, 0.09, 0.011, 0.0065, 10, rot=-side * 0.3), nost)
        cv.line(cv.local(np.array([side * 0.026, side * 0.04, side * 0.044, side * 0.036]) + ntx,
                         np.array([0.05, 0.058, 0.078, 0.094])), wing)
    cv.line(cv.local(np.array([-0.012, 0.0, 0.012]) + ntx, np.array([0.1, 0.104, 0.1])),
            _col(_mix(skin_sh, skin_dk, 0.3)))


def _mouth(cv: _Canvas, f: _Face):
    p, fem, old, lips = f.p, f.fem, f.old, f.lips
    mo = p["mouth_open"]
    mx, my = 0.04 * f.yaw, 0.19
    mw = (0.078 + 0.006 * fem) * (1.0 + 0.16 * mo)
    oh = 0.085 * (0.08 + 0.92 * mo) if mo > 0.0 else 0.0     # an open mouth shows at least ~1 px of opening
    tu = (0.018 + 0.008 * fem) * (1.0 - 0.3 * old)
    tl = (0.024 + 0.012 * fem) * (1.0 - 0.3 * old)
    corner = -0.016 * mo + 0.008 * old - 0.003
    u = _U12
    uu = 1.0 - u ** 2
    xs = mx + mw * u
    seam = my + corner * u ** 2
    up_in = seam - 0.22 * oh * uu
    lo_in = seam + 0.78 * oh * uu ** 0.8
    up_out = up_in - tu * uu ** 0.5 * (1.0 - 0.28 * np.exp(-(u / 0.16) ** 2)) - 0.004 * uu
    lo_out = lo_in + tl * uu ** 0.6
    xx = np.concatenate([xs, xs[::-1]])
    # a soft shadow under the lower lip first
    bx, by = cv.to_px(mx, float(lo_out[6]) + 0.012)
    _soft(cv, bx, by, mw * 0.7 * f.scale, 0.016 * f.scale, _col(f.skin_dk), 0.35, only_id=1)
    cv.fill(cv.local(xx, np.concatenate([up_out, up_in[::-1]])), _col(lips * 0.86), 7)
    cv.fill(cv.local(xx, np.concatenate([lo_in, lo_out[::-1]])), _col(lips), 9)
    if mo > 0.0:
        cv.fill_covered(cv.local(np.concatenate([xs, xs[-2:0:-1]]), np.concatenate([up_in, lo_in[-2:0:-1]])),
                        (70, 18, 24), 8)
        if oh > 0.012:
            ut = np.linspace(-0.75, 0.75, 9)
            tx = mx + mw * ut
            ty0 = my + corner * ut ** 2 - 0.22 * oh * (1 - ut ** 2)
            ty1 = ty0 + min(0.35 * oh, 0.022) * (1 - ut ** 2) ** 0.3
            cv2.fillPoly(cv.rgb, [cv.local(np.concatenate([tx, tx[::-1]]), np.concatenate([ty0, ty1[::-1]]))],
                         (236, 230, 220), _AA, _SH)
            if oh > 0.03:
                tg = _ellipse(cv, mx, my + corner * 0.3 + 0.62 * oh, mw * 0.45, 0.2 * oh, 14)
                cv2.fillPoly(cv.rgb, [tg], _col(lips * 0.8), _AA, _SH)
    else:
        cv.line(cv.local(xs, seam), _col(lips * 0.55))
    cv.line(cv.local(xs[3:-3], lo_out[3:-3] - tl * 0.45), _col(np.minimum(lips * 1.18 + 14, 255)))


def _soft_skin(cv: _Canvas, f: _Face):
    """Blush, eye shadow, nose shadow and beard shadow (soft blobs on skin pixels, RGB only)."""
    s, yaw = f.scale, f.yaw
    bx, by = cv.to_px(0.07 * yaw, 0.112)
    _soft(cv, bx, by, 0.04 * s, 0.018 * s, _col(f.skin_dk), 0.3, only_id=1)
    if f.fem > 0.0:
        for side in (-1.0, 1.0):
            bx, by = cv.to_px(side * 0.13 + 0.03 * yaw, 0.075)
            _soft(cv, bx, by, 0.06 * s, 0.04 * s, (222, 112, 122), 0.22 * f.fem, only_id=1)
    if f.male > 0.0:
        st = f.male * (0.3 + 0.5 * f.p["beard"])
        stub = _col(_mix(f.skin_dk * 0.6, f.hair * 0.6, 0.4))
        bx, by = cv.to_px(0.0, 0.25)
        _soft(cv, bx, by, f.a * 1.05 * s, 0.16 * s, stub, 0.6 * st, only_id=1)
        bx, by = cv.to_px(0.04 * yaw, 0.148)
        _soft(cv, bx, by, 0.085 * s, 0.028 * s, stub, 0.6 * st, only_id=1)


def _light(cv: _Canvas, f: _Face, A: dict):
    """One multiplicative pass: directional light, rim darkening, hair texture and sheen; background kept."""
    p = f.p
    ang = 2.0 * math.pi * p["light_dir"]
    ls = 0.25 + 0.75 * p["light_strength"]
    lx, ly = math.cos(ang) * 0.9 * ls, (math.sin(ang) * 0.5 - 0.3) * 0.9 * ls
    dx = (A["X"] - f.hx) * (1.0 / (f.a * f.scale * 1.05))
    dy = (A["Y"] - f.hy) * (1.0 / (0.40 * f.scale))
    d2 = dx * dx + dy * dy
    F = 1.0 + 0.3 * (lx * dx + ly * dy) - 0.3 * np.clip(d2 - 0.45, 0.0, 1.0)
    ids = cv.ids
    curly = f.curly
    # hair: texture of a fixed absolute amplitude (so texture measures do not follow the hair colour),
    # horizontal light only and a sheen band on the crown (so the mean hair brightness does not
    # depend on the hair length)
    lum = max(float(f.hair.mean()), 8.0)
    amp = 17.0 / lum
    tex = A["strands"] * (amp * (1.0 - curly)) + A["curls"] * (amp * 0.85 * curly)
    sheen = 0.1 * (1.0 - 0.6 * curly) * np.exp(-((dy + 0.62) * 5.0) ** 2)
    Fh = (1.0 + 0.12 * lx * dx) + tex + sheen
    F = np.where(ids == 10, Fh, F)
    F = np.where(ids == 0, np.float32(1.0), F)
    rgb = cv.rgb.astype(np.float32)
    rgb *= F[..., None]
    cv.rgb = np.clip(rgb, 0, 255).astype(np.uint8)


def _glasses(cv: _Canvas, f: _Face):
    gs, yaw, ey, esep, res = f.p["glasses_style"], f.yaw, f.ey, f.esep, cv.res
    frame = (30, 30, 34) if gs < 0.45 else ((96, 56, 30) if gs < 0.75 else (175, 175, 180))
    gw, gh = 0.088 + 0.01 * gs, 0.058 + 0.006 * (1 - gs)
    rad = 2.0 + 4.0 * (1 - gs)
    c, s = _circle(24)
    r = (np.abs(c) ** rad + np.abs(s) ** rad) ** (-1.0 / rad)
    thick = 1 + (gs < 0.45)
    for side in (-1.0, 1.0):
        gx = side * esep + 0.035 * yaw
        pts = cv.local(gx + gw * r * c, ey + 0.004 + gh * r * s)
        x0, y0 = np.maximum(pts.min(0) >> _SH, 0)
        x1, y1 = np.minimum((pts.max(0) >> _SH) + 2, res)
        if x1 > x0 and y1 > y0:
            roi = cv.rgb[y0:y1, x0:x1]
            lens = roi.copy()
            cv2.fillPoly(lens, [pts - np.array([x0 << _SH, y0 << _SH], np.int32)], (200, 215, 230), _AA, _SH)
            roi[...] = cv2.addWeighted(roi, 0.84, lens, 0.16, 0.0)
        cv.line(pts, frame, thick, closed=True)
        hx = gx - side * gw * 0.3
        cv.line(cv.local(np.array([hx - 0.02, hx + 0.01]), np.array([ey - 0.02, ey + 0.03])), (235, 240, 245))
        cv.line(cv.local(np.array([gx + side * gw, side * f.a * 0.98]), np.array([ey - 0.01, ey - 0.02])), frame)
    cv.line(cv.local(np.array([-esep + gw, -0.02, 0.02, esep - gw]) + 0.035 * yaw,
                     np.array([ey - 0.005, ey - 0.015, ey - 0.015, ey - 0.005])), frame)


def render(params, resolution: int = 128):
    """Render one face. ``params``: mapping name -> float (see the module table).

    Returns ``(rgb, mask)``: uint8 [H, W, 3] RGB and uint8 [H, W] class ids 0..10.
    """
    p = _params(params)
    res = int(resolution)
    A = _assets(res)
    f = _Face(p, res)
    cv = _Canvas(res, _background(res, p))
    cv.set_head(f.hx, f.hy, f.scale, f.yaw * ROLL_MAX)
    _body(cv, f)
    _back_hair(cv, f)
    _neck_ears(cv, f)
    _face(cv, f)
    if f.old > 0.0:
        _wrinkles(cv, f)
    _soft_skin(cv, f)
    _front_hair(cv, f)
    _brows(cv, f)
    _eyes(cv, f)
    _nose(cv, f)
    _mouth(cv, f)
    _light(cv, f, A)
    if p["glasses"] >= 0.5:
        _glasses(cv, f)
    if p["quality_defect"] >= 0.5:
        _defect(cv.rgb, p["defect_severity"])
    return cv.rgb, _ID_TO_CLASS[cv.ids]


def _defect(rgb: np.ndarray, severity: float) -> None:
    res = rgb.shape[0]
    r1 = int(round(res * 0.34))
    top = rgb[:r1]
    sig = res * (0.03 + 0.03 * severity)
    blur = cv2.GaussianBlur(top, (0, 0), sigmaX=sig * 1.8, sigmaY=sig * 0.6)
    small = cv2.resize(blur, (max(res // 10, 2), max(r1 // 6, 2)), interpolation=cv2.INTER_AREA)
    smear = cv2.resize(small, (res, r1), interpolation=cv2.INTER_NEAREST)
    bad = cv2.addWeighted(blur, 0.55, smear, 0.45, 8.0 * (severity - 0.3))
    yy = (np.arange(r1, dtype=np.float32) + 0.5) / res
    xx = (np.arange(res, dtype=np.float32) + 0.5) / res
    wy = np.clip((0.33 - yy) / 0.07, 0.0, 1.0)
    wx = np.clip((0.44 - np.abs(xx - 0.5)) / 0.12, 0.0, 1.0)
    w = (wy[:, None] * wx[None, :])[..., None]
    rgb[:r1] = (top * (1.0 - w) + bad * w).astype(np.uint8)


# --------------------------------------------------------------------------------------- batch + helpers

def _rows(table):
    if hasattr(table, "to_dict") and hasattr(table, "columns"):
        cols = {c: np.asarray(table[c], dtype=np.float64).tolist() for c in table.columns if c in PARAM_SPEC}
        n = len(table)
    else:
        cols = {c: np.asarray(v, dtype=np.float64).reshape(-1).tolist() for c, v in dict(table).items()
                if c in PARAM_SPEC}
        n = len(next(iter(cols.values()))) if cols else 0
    names = list(cols)
    for i in range(n):
        yield {k: cols[k][i] for k in names}


def render_batch(param_table, resolution: int = 128):
    """Render every row of ``param_table`` (DataFrame or dict name -> array).

    Returns ``(rgb [N, H, W, 3] uint8, mask [N, H, W] uint8)``.
    """
    rows = list(_rows(param_table))
    n = len(rows)
    res = int(resolution)
    rgb = np.empty((n, res, res, 3), np.uint8)
    mask = np.empty((n, res, res), np.uint8)
    for i, r in enumerate(rows):
        rgb[i], mask[i] = render(r, res)
    return rgb, mask


def colorize_mask(mask: np.ndarray) -> np.ndarray:
    """Class-id mask [..., H, W] -> RGB uint8 [..., H, W, 3] with the FaceXFormer demo palette."""
    return PALETTE[np.asarray(mask, dtype=np.uint8).clip(0, 10)]


def contact_sheet(images, ncols: int = 8, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile N images ([N, H, W, 3] or [N, H, W]) into one uint8 grid, row-major, ``pad`` px apart."""
    imgs = np.asarray(images)
    if imgs.ndim == 3:
        imgs = np.repeat(imgs[..., None], 3, axis=-1)
    n, h, w = imgs.shape[:3]
    ncols = max(1, min(int(ncols), n))
    nrows = (n + ncols - 1) // ncols
    sheet = np.full((nrows * h + (nrows + 1) * pad, ncols * w + (ncols + 1) * pad, 3), pad_value, np.uint8)
    for i in range(n):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[y:y + h, x:x + w] = imgs[i]
    return sheet
