"""The face's features: eyebrows, eyes, nose, mouth, skin softening, lighting / hair texture, glasses."""
from __future__ import annotations

import math

import cv2
import numpy as np

from .canvas import (_AA, _Canvas, _IRIS, _L8, _SH, _U12, _U9, _circle, _col, _ellipse, _mix, _soft)
from .head import _Face


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
