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

import cv2
import numpy as np

from pipeline.vocabulary import CLASS_NAMES, PALETTE

from .drawing.canvas import (BG_AMP_SPAN, DEFAULTS, FACE_CY, PARAM_NAMES, PARAM_SPEC, ROLL_MAX, _Canvas,
                             _ID_TO_CLASS, _assets)
from .drawing.head import _Face, _back_hair, _background, _body, _face, _front_hair, _neck_ears, _params, _wrinkles
from .drawing.features import _brows, _eyes, _glasses, _light, _mouth, _nose, _soft_skin

__all__ = ["PARAM_SPEC", "PARAM_NAMES", "DEFAULTS", "CLASS_NAMES", "PALETTE", "BG_AMP_SPAN", "ROLL_MAX", "FACE_CY",
           "render", "render_batch", "colorize_mask", "contact_sheet"]


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
