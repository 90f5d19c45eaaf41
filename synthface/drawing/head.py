"""The head: face geometry from the parameters, background, clothes, hair behind and in front of the
head, neck and ears, face shape and wrinkles."""
from __future__ import annotations

import math

import numpy as np

from .canvas import (BG_AMP_SPAN, DEFAULTS, FACE_CY, PARAM_SPEC, _BG_TINT, _CLOTH, _CLOTHES, _Canvas, _HAIR, _LIPS,
                     _SKIN, _assets, _col, _ellipse, _mix)


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
