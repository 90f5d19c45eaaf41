"""Stage-4 property scores from face-parsing maps (spec 01 §4, spec 02 §1.2).

Two algorithms turn a parsing map ``M`` (S x S class ids, FaceXFormer classes 0..10) and the
S x S colour image ``I`` the parser saw into raw property values:

* :func:`scores_v2` -- the 2nd algorithm (the default; feeds the property-score CNN and
  fine-tuning): eyes, pose, hair colour, hair length, mouth, background mean / std, plus the
  hairstyle score of spec 02 §1.2;
* :func:`scores_v1` -- the 1st algorithm, kept for comparison.

Both work on a batch at once (``maps`` uint8 [N, S, S], ``images`` uint8 [N, S, S, 3]); the
work is vectorised NumPy over the batch, with no Python loop over pixels (the only loops run
over the handful of classes / candidate points). Each returns a :class:`ScoreBatch`: raw
float64 values per property and one boolean array per fallback, so every default value that
replaced a measurement can be counted.

Colour: ``g(r, c)`` is the mean of the three channels of a pixel (channel order does not
matter). Since ``3 g`` is an integer in 0..765, the trimmed statistics are computed exactly
from a per-image histogram of channel sums instead of sorting pixel values.

Map size. The spec fixes S = 224. For other sizes every row / column window uses the same
integer fractions of S as the original code (S//4, 3S//4, S//2, 3S//8, S-1), and the pixel
amounts are scaled with S and rounded (our choice; the original had only 224): the hair-row
threshold ``T = round(20 S / 224)`` (bonus offset ``T // 2``), the hairstyle block
``b = round(4 S / 224)`` and offset ``d = round(8 S / 224)`` (each at least 1). At S = 224 they
are exactly the spec's 20, 10, 4 and 8. Raw values are in pixels of the S x S map (the
z-score removes the scale).

Details decided here (spec 01 §4.2 and 02 §1.2 describe the code; these are its behaviour):

* eyes tilt: the longest chord of ``P_k`` is searched only among pixels that are the top or
  bottom pixel of their column *and* the leftmost or rightmost of their row (any endpoint of a
  longest chord is an extreme point of the set, and such a point must be extreme in its row
  and its column), with exact integer squared distances; the tie rule of the brute-force scan
  (pixels ordered column by column, pairs ``(i, j)``, ``j < i``, i ascending, the first
  strictly longer pair wins) becomes "smallest i, then smallest j" among the longest pairs;
* pose with equal column centroids (a division by zero in the original, never observed) gives
  0.0 and is counted as a fallback;
* hairstyle, left-block check: the code tests ``(y + b - 1, x - d - b + 1)`` = ``(y+3, x-11)``,
  and for ``x < d + b - 1`` that column is negative, which numpy wraps to the right edge
  (column S + x - 11). ``left_check="code"`` (default) reproduces that; ``"block"`` tests the
  left block's own corner ``(y + b - 1, x - d + b - 1)`` = ``(y+3, x-5)``, what the docs meant;
* 1st algorithm, cases where the original crashed or produced NaN: no hair pixel -> hair colour
  127.5 (the 2nd algorithm's default) and hair length 0.0; no nose pixel, or a nose with no
  spread in rows or columns (Pearson undefined) -> pose 0.0. Each is a counted fallback.
"""
from __future__ import annotations

import cv2
import numpy as np

from pipeline.vocabulary import PROPERTIES

__all__ = ["BACKGROUND", "SKIN", "EYE_L", "EYE_R", "NOSE", "UPPER_LIP", "INNER_MOUTH", "LOWER_LIP", "HAIR",
           "NUM_CLASSES", "PROPERTIES", "V2_COLUMNS", "Geometry", "ScoreBatch", "scores_v1", "scores_v2",
           "eyes_pose_v2", "eye_height_and_cos", "largest_component", "hair_color_v2", "hair_length_v2", "mouth_v2",
           "background",
           "hairstyle", "eyes_v1", "hair_color_v1", "hair_length_v1", "mouth_v1", "pose_v1", "channel_sum",
           "FALLBACK_DEFAULTS", "FLAGS"]

from .property_scores_v1 import eyes_v1, hair_color_v1, hair_length_v1, mouth_v1, pose_v1, scores_v1
from .score_maps import (BACKGROUND, EYE_L, EYE_R, FALLBACK_DEFAULTS, FLAGS, HAIR, HAIR_COLOR_DEFAULT, HAIRSTYLE_DEFAULT,
                         HAIRSTYLE_EPS, INNER_MOUTH, LOWER_LIP, NOSE, NUM_CLASSES, SKIN, UPPER_LIP, V2_COLUMNS,
                         Geometry, ScoreBatch, _check, _first_last, _histograms, _trimmed, background, channel_sum)

# ------------------------------------------------------------------------------------ 2nd algorithm

def eye_height_and_cos(win: np.ndarray, r0: int, c0: int):
    """For window masks [N, R, C] (the class-k pixels of the eye window, top-left at (r0, c0)):

    * H: the largest per-column span (last - first row of the class pixels in a column);
    * cos: |dc| / distance of the longest chord of the pixel set (the spec's scan-order tie
      rule), 1.0 with fewer than two pixels;
    * count and centroid (row, column in map coordinates, NaN when empty).
    """
    n = win.shape[0]
    # crop to the rows / columns where any image of the batch has a pixel (exactly the same result)
    rows_used = np.flatnonzero(win.any(axis=(0, 2)))
    cols_used = np.flatnonzero(win.any(axis=(0, 1)))
    if rows_used.size == 0:
        nan = np.full(n, np.nan)
        return np.zeros(n, np.int64), np.ones(n), np.zeros(n, np.int64), nan, nan.copy()
    ra, rb, ca, cb = rows_used[0], rows_used[-1] + 1, cols_used[0], cols_used[-1] + 1
    win = win[:, ra:rb, ca:cb]
    r0, c0 = r0 + int(ra), c0 + int(ca)
    _, R, C = win.shape
    first_r, last_r, col_any = _first_last(win, axis=1)             # [N, C]
    H = np.where(col_any, last_r - first_r, 0).max(axis=1)
    colsum = win.sum(axis=1, dtype=np.int64)                        # [N, C]
    rowsum = win.sum(axis=2, dtype=np.int64)                        # [N, R]
    count = colsum.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r_mean = (rowsum @ np.arange(r0, r0 + R, dtype=np.int64)) / count
        c_mean = (colsum @ np.arange(c0, c0 + C, dtype=np.int64)) / count
    first_c, last_c, _ = _first_last(win, axis=2)                   # [N, R]
    cos = _longest_chord_cos(first_r, last_r, col_any, first_c, last_c)
    cos = np.where(count >= 2, cos, 1.0)
    return H.astype(np.int64), cos, count, r_mean, c_mean


def _longest_chord_cos(first_r, last_r, col_any, first_c, last_c, chunk_pairs: int = 4_000_000) -> np.ndarray:
    """|dc| / length of the longest chord of each image's pixel set, from its extreme pixels.

    Any endpoint of a longest chord is an extreme point of the set, hence the top or bottom
    pixel of its column and the leftmost or rightmost pixel of its row. The candidates are
    therefore the top / bottom pixel of each column (``first_r`` / ``last_r`` [N, C]) that are
    also row-extreme (``first_c`` / ``last_c`` [N, R]). They are kept in the original scan order
    (columns ascending, rows ascending within a column); among the longest pairs (i, j), j < i,
    the one with the smallest i, then the smallest j, is the one the brute-force scan keeps.
    """
    n, C = first_r.shape
    out = np.ones(n, np.float64)
    cols = np.broadcast_to(np.arange(C), (n, C))
    rows = np.stack([first_r, last_r], axis=2).reshape(n, 2 * C)            # top, bottom per column
    colx = np.repeat(cols, 2, axis=1)
    valid = np.repeat(col_any, 2, axis=1)
    valid[:, 1::2] &= last_r != first_r                                      # one pixel in the column: once
    fc = np.take_along_axis(first_c, rows, axis=1)
    lc = np.take_along_axis(last_c, rows, axis=1)
    valid &= (colx == fc) | (colx == lc)                                     # also extreme in its row
    counts = valid.sum(axis=1)
    kmax = int(counts.max()) if n else 0
    if kmax < 2:
        return out
    order = np.argsort(~valid, axis=1, kind="stable")[:, :kmax]              # compact, keeping scan order
    R = np.take_along_axis(rows, order, axis=1).astype(np.int32)
    Cc = np.take_along_axis(colx, order, axis=1).astype(np.int32)
    ok_pt = np.arange(kmax)[None, :] < counts[:, None]
    lower = np.tri(kmax, kmax, -1, dtype=bool)                               # j < i
    step = max(1, chunk_pairs // (kmax * kmax))
    for s in range(0, n, step):
        sl = slice(s, s + step)
        dr = R[sl, :, None] - R[sl, None, :]
        dc = Cc[sl, :, None] - Cc[sl, None, :]
        d2 = dr * dr + dc * dc
        d2 = np.where(lower[None] & ok_pt[sl, :, None] & ok_pt[sl, None, :], d2, -1)
        flat = d2.reshape(d2.shape[0], -1)
        best = flat.max(axis=1)
        first = np.argmax(flat == best[:, None], axis=1)                     # i-major: smallest i, then j
        dcf = np.abs(dc.reshape(dc.shape[0], -1)[np.arange(flat.shape[0]), first])
        with np.errstate(invalid="ignore", divide="ignore"):
            cs = dcf / np.sqrt(best.astype(np.float64))
        out[sl] = np.where(best > 0, cs, 1.0)
    return out


def largest_component(win: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep only the largest 8-connected component of each mask [N, R, C] (ties: the first in raster
    order); returns (masks, number of pixels removed per image)."""
    out = np.zeros_like(win)
    removed = np.zeros(win.shape[0], np.int64)
    for i in range(win.shape[0]):
        n, lab, stats, _ = cv2.connectedComponentsWithStats(win[i].view(np.uint8), connectivity=8)
        if n <= 1:
            continue
        big = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        out[i] = lab == big
        removed[i] = int(stats[1:, cv2.CC_STAT_AREA].sum() - stats[big, cv2.CC_STAT_AREA])
    return out, removed


def eyes_pose_v2(maps: np.ndarray, geom: Geometry | None = None, eye_components: str = "all"):
    """2nd-algorithm eyes and pose: (eyes, pose, fallbacks).

    ``eye_components="largest"`` (our option, not the original's) keeps only the largest connected
    component of each eye class inside its window: a single stray eye-class pixel far from the eye
    otherwise sets the per-column span or the longest chord.
    """
    geom = geom or _check(maps)
    if eye_components not in ("all", "largest"):
        raise ValueError(f"eye_components must be 'all' or 'largest', got {eye_components!r}")
    r0, r1 = geom.v2_eye_rows
    parts, cleaned = {}, {}
    for k, (c0, c1) in geom.eye_cols.items():
        win = np.ascontiguousarray(maps[:, r0:r1, c0:c1] == k)
        if eye_components == "largest":
            win, removed = largest_component(win)
            cleaned[k] = removed > 0
        parts[k] = eye_height_and_cos(win, r0, c0)
    (h4, cos4, n4, rm4, cm4), (h5, cos5, n5, rm5, cm5) = parts[EYE_L], parts[EYE_R]
    eyes = np.maximum(h4 * cos4, h5 * cos5)
    missing = (n4 == 0) | (n5 == 0)
    dcol = cm5 - cm4
    equal = ~missing & (dcol == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        pose = np.where(missing | equal, 0.0, (rm5 - rm4) / np.where(equal | missing, 1.0, dcol))
    fb = {"eye4_missing": n4 == 0, "eye5_missing": n5 == 0, "eye4_single_pixel": n4 == 1,
          "eye5_single_pixel": n5 == 1, "eyes_zero": eyes == 0, "pose_eye_missing": missing,
          "pose_equal_column_centroids": equal}
    for k, v in cleaned.items():
        fb[f"eye{k}_stray_pixels_removed"] = v
    return eyes.astype(np.float64), pose.astype(np.float64), fb


def hair_color_v2(hair: np.ndarray, csum: np.ndarray):
    """10 %-90 % trimmed mean of g over the hair pixels; 127.5 when nothing is kept."""
    mean, _, n, kept = _trimmed(_histograms(csum, hair), 0.1, 0.9)
    none = n == 0
    empty = (n > 0) & (kept <= 0)
    val = np.where(kept > 0, mean, HAIR_COLOR_DEFAULT)
    return val, {"hair_color_no_hair": none, "hair_color_trim_empty": empty}


def hair_length_v2(hair: np.ndarray, geom: Geometry):
    """Rows in [S/4, S) with >= T hair pixels, plus the bottom-row bonus."""
    S, T, off = geom.size, geom.hair_row_threshold, geom.hair_bonus_offset
    per_row = hair.sum(axis=2, dtype=np.int64)                     # [N, S]
    rows = (per_row[:, geom.quarter:] >= T).sum(axis=1)
    bottom = hair[:, S - 1]
    n_l = bottom[:, :S // 2].sum(axis=1, dtype=np.int64)
    n_r = bottom[:, S // 2:].sum(axis=1, dtype=np.int64)
    bonus = np.maximum(n_l - off, 0) / 2.0 + np.maximum(n_r - off, 0) / 2.0
    val = rows + np.where(per_row[:, S - 1] >= T, bonus, 0.0)
    return val.astype(np.float64), {"hair_length_no_hair": per_row.sum(axis=1) == 0}


def mouth_v2(counts: np.ndarray):
    """Inner-mouth share n8 / (n7 + n8 + n9); 0 without lips and inner mouth."""
    n7, n8, n9 = counts[:, UPPER_LIP], counts[:, INNER_MOUTH], counts[:, LOWER_LIP]
    den = n7 + n8 + n9
    with np.errstate(invalid="ignore", divide="ignore"):
        val = np.where(den > 0, n8 / np.maximum(den, 1), 0.0)
    return val.astype(np.float64), {"mouth_no_lips": den == 0, "mouth_closed": (n8 == 0) & (den > 0)}


def hairstyle(maps: np.ndarray, csum: np.ndarray, geom: Geometry | None = None, left_check: str = "code"):
    """Hairstyle score of spec 02 §1.2 (larger = curlier); 0.45 when no position is accepted.

    Positions (y, x), x in [d, S - d - b + 1), y in [S/2, S - d - b + 1), are accepted when eight
    corner pixels of the block at (y, x) and of its bottom / left / right neighbours (offset d)
    are hair; each gives ratio = V / (H + 5) from the b x b block means m of g:
    V = |m - m_bottom|, H = max(|m - m_left|, |m - m_right|). All positions are evaluated at
    once with shifted views of the hair mask and of the block sums.
    """
    geom = geom or _check(maps)
    if left_check not in ("code", "block"):
        raise ValueError(f"left_check must be 'code' or 'block', got {left_check!r}")
    S, b, d = geom.size, geom.hairstyle_block, geom.hairstyle_offset
    e = b - 1
    x0, x1 = d, S - (d + e)                                        # x in [8, 213)
    y0, y1 = S // 2, S - (d + e)                                   # y in [112, 213)
    n = maps.shape[0]
    if x1 <= x0 or y1 <= y0:
        return np.full(n, HAIRSTYLE_DEFAULT), {"hairstyle_no_position": np.ones(n, bool)}
    hair = maps == HAIR

    def at(dy: int, dx: int):
        """hair[y + dy, x + dx] for every position (columns wrap like numpy's negative indices)."""
        rows = hair[:, y0 + dy:y1 + dy]
        c0, c1 = x0 + dx, x1 + dx
        if c0 >= 0:
            return rows[:, :, c0:c1]
        return np.concatenate([rows[:, :, S + c0:], rows[:, :, :c1]], axis=2)

    left2 = at(e, -d - e) if left_check == "code" else at(e, -d + e)
    ok = at(0, 0) & at(d, 0) & at(0, -d) & at(0, d) & at(e, e) & at(d + e, e) & left2 & at(e, d + e)
    # b x b block sums of the channel sums over rows [y0, S) (separable running sums, int32)
    sub = csum[:, y0:].astype(np.int32 if 765 * b * b > 32767 else np.int16)
    rs = sub[:, :sub.shape[1] - e]
    for i in range(1, b):
        rs = rs + sub[:, i:sub.shape[1] - e + i]
    box = rs[:, :, :S - e]
    for j in range(1, b):
        box = box + rs[:, :, j:S - e + j]                          # box[r, c] = block sum at (y0 + r, c)
    ny, nx = y1 - y0, x1 - x0

    def blk(dy: int, dx: int):
        return box[:, dy:dy + ny, x0 + dx:x0 + dx + nx]

    m = blk(0, 0)
    # with block sums instead of means (mean = sum / (3 b^2)): V / (H + 5) = V' / (H' + 5 * 3 b^2);
    # ratios only at the accepted positions, summed per image
    hdiff = np.maximum(np.abs(m - blk(0, -d)), np.abs(m - blk(0, d)))
    vdiff = np.abs(m - blk(d, 0))
    img = np.broadcast_to(np.arange(n)[:, None, None], ok.shape)[ok]
    ratio = vdiff[ok] / (hdiff[ok] + HAIRSTYLE_EPS * 3 * b * b)
    cnt = np.bincount(img, minlength=n)
    total = np.bincount(img, weights=ratio, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        val = np.where(cnt > 0, total / np.maximum(cnt, 1), HAIRSTYLE_DEFAULT)
    return val.astype(np.float64), {"hairstyle_no_position": cnt == 0}


def _class_counts(maps: np.ndarray) -> np.ndarray:
    """Pixels per class id 0..10: int64 [N, 11]."""
    out = np.empty((maps.shape[0], NUM_CLASSES), np.int64)
    for i in range(maps.shape[0]):
        out[i] = cv2.calcHist([maps[i]], [0], None, [NUM_CLASSES], [0, NUM_CLASSES]).ravel()
    return out


def scores_v2(maps: np.ndarray, images: np.ndarray, with_hairstyle: bool = True,
              left_check: str = "code", eye_components: str = "all") -> ScoreBatch:
    """Raw 2nd-algorithm values of a batch (``maps`` uint8 [N, S, S], ``images`` uint8 [N, S, S, 3]).

    ``left_check``: see :func:`hairstyle`; ``eye_components``: see :func:`eyes_pose_v2`.
    """
    maps = np.asarray(maps, dtype=np.uint8)
    images = np.asarray(images, dtype=np.uint8)
    geom = _check(maps, images)
    csum = channel_sum(images)
    out = ScoreBatch()
    eyes, pose, fb = eyes_pose_v2(maps, geom, eye_components)
    out.fallbacks.update(fb)
    hair = maps == HAIR
    hc, fb = hair_color_v2(hair, csum)
    out.fallbacks.update(fb)
    hl, fb = hair_length_v2(hair, geom)
    out.fallbacks.update(fb)
    mo, fb = mouth_v2(_class_counts(maps))
    out.fallbacks.update(fb)
    bm, bs, fb = background(maps, csum, geom)
    out.fallbacks.update(fb)
    out.values = {"eyes": eyes, "hair_color": hc, "hair_length": hl, "mouth": mo, "pose": pose,
                  "background_mean": bm, "background_std": bs}
    if with_hairstyle:
        hs, fb = hairstyle(maps, csum, geom, left_check)
        out.values["hairstyle"] = hs
        out.fallbacks.update(fb)
    return out
