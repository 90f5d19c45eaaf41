"""The 1st property-score algorithm (spec 01 §4), kept for comparison with the 2nd; see
:mod:`segmentation.property_scores` for the conventions and the fallbacks it counts."""
from __future__ import annotations

import numpy as np

from .score_maps import (FALLBACK_DEFAULTS, HAIR, HAIR_COLOR_DEFAULT, INNER_MOUTH, LOWER_LIP, NOSE, UPPER_LIP, Geometry,
                         ScoreBatch, _check, _first_last, _histograms, _median, _row_extent, background, channel_sum)

# ------------------------------------------------------------------------------------ 1st algorithm

def eyes_v1(maps: np.ndarray, geom: Geometry):
    """Mean of the two eyes' row extents in rows [S/4, S/4 + 3S/8) of their windows."""
    r0, r1 = geom.v1_eye_rows
    h = []
    for k, (c0, c1) in geom.eye_cols.items():
        h.append(_row_extent(maps[:, r0:r1, c0:c1] == k))
    return (h[0] + h[1]) / 2.0


def hair_color_v1(hair: np.ndarray, csum: np.ndarray):
    """Median of g over the hair pixels; 127.5 without hair (the original crashed)."""
    med = _median(_histograms(csum, hair))
    none = np.isnan(med)
    return np.where(none, HAIR_COLOR_DEFAULT, med), {"v1_hair_color_no_hair": none}


def hair_length_v1(hair: np.ndarray, geom: Geometry):
    """Last hair row, plus half the bottom row's hair pixels when hair reaches it; 0.0 without hair."""
    S = geom.size
    rows = hair.any(axis=2)
    _, last, anyv = _first_last(rows, axis=1)
    bottom = hair[:, S - 1].sum(axis=1, dtype=np.int64)
    val = np.where(last == S - 1, (S - 1) + bottom / 2.0, last.astype(np.float64))
    val = np.where(anyv, val, FALLBACK_DEFAULTS["hair_length_v1"])
    return val, {"v1_hair_length_no_hair": ~anyv}


def mouth_v1(maps: np.ndarray):
    """Row extent of the lips (7 or 9) plus row extent of the inner mouth (8)."""
    lips = (maps == UPPER_LIP) | (maps == LOWER_LIP)
    return (_row_extent(lips) + _row_extent(maps == INNER_MOUTH)).astype(np.float64)


def pose_v1(maps: np.ndarray):
    """-Pearson(column, row) over the nose pixels; 0.0 when undefined (the original gave NaN)."""
    nose = maps == NOSE
    n, S = nose.shape[0], nose.shape[1]
    idx = np.arange(S, dtype=np.int64)
    rows = nose.sum(axis=2, dtype=np.int64)                        # [N, S] pixels per row
    cols = nose.sum(axis=1, dtype=np.int64)
    cnt = rows.sum(axis=1)
    sr, sc = rows @ idx, cols @ idx
    srr, scc = rows @ (idx * idx), cols @ (idx * idx)
    src = np.rint((nose.astype(np.float64) @ idx.astype(np.float64)) @ idx.astype(np.float64)).astype(np.int64)
    cov = cnt * src - sr * sc                                      # exact integers
    vr = cnt * srr - sr * sr
    vc = cnt * scc - sc * sc
    undefined = (cnt < 2) | (vr == 0) | (vc == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(vr.astype(np.float64) * vc.astype(np.float64))
    val = np.where(undefined, 0.0, -r)
    return val, {"v1_pose_no_nose": cnt == 0, "v1_pose_undefined": undefined & (cnt > 0)}


def scores_v1(maps: np.ndarray, images: np.ndarray) -> ScoreBatch:
    """Raw 1st-algorithm values. ``images`` is the colour image the user chose (see the stage)."""
    maps = np.asarray(maps, dtype=np.uint8)
    images = np.asarray(images, dtype=np.uint8)
    geom = _check(maps, images)
    csum = channel_sum(images)
    out = ScoreBatch()
    hair = maps == HAIR
    hc, fb = hair_color_v1(hair, csum)
    out.fallbacks.update(fb)
    hl, fb = hair_length_v1(hair, geom)
    out.fallbacks.update(fb)
    po, fb = pose_v1(maps)
    out.fallbacks.update(fb)
    bm, bs, fb = background(maps, csum, geom)
    out.fallbacks.update(fb)
    out.values = {"eyes": eyes_v1(maps, geom), "hair_color": hc, "hair_length": hl, "mouth": mouth_v1(maps),
                  "pose": po, "background_mean": bm, "background_std": bs}
    return out
