"""synthface renderer: determinism, mask truth per factor, the stage-4 measurements respond to each factor."""
import cv2
import numpy as np
import pandas as pd

from synthface.renderer import (CLASS_NAMES, PALETTE, PARAM_NAMES, PARAM_SPEC, colorize_mask, contact_sheet, render,
                                render_batch)

RES = 128


def eye_height(mask: np.ndarray) -> int:
    """Largest per-column span of the eye classes (the stage-4 'eyes' height, without the tilt factor)."""
    best = 0
    for k in (4, 5):
        m = mask == k
        cols = m.any(0)
        if cols.any():
            first = np.argmax(m, 0)
            last = m.shape[0] - 1 - np.argmax(m[::-1], 0)
            best = max(best, int((last - first)[cols].max()) + 1)
    return best


def eye_slope(mask: np.ndarray) -> float:
    r4, c4 = np.nonzero(mask == 4)
    r5, c5 = np.nonzero(mask == 5)
    return (r5.mean() - r4.mean()) / (c5.mean() - c4.mean())


def lap_var(img: np.ndarray) -> float:
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(g, cv2.CV_64F).var())


def test_param_table_is_consistent():
    assert PARAM_NAMES == list(PARAM_SPEC)
    for lo, hi, d in PARAM_SPEC.values():
        assert lo < hi and lo <= d <= hi
    assert len(CLASS_NAMES) == 11 and PALETTE.shape == (11, 3)


def test_output_types_and_shapes():
    for res in (64, 128, 256):
        rgb, mask = render({"mouth_open": 0.5}, res)
        assert rgb.shape == (res, res, 3) and rgb.dtype == np.uint8
        assert mask.shape == (res, res) and mask.dtype == np.uint8
        assert set(np.unique(mask)) == set(range(11)), res     # every class present in an open-mouth face


def test_deterministic_and_batch_matches_single():
    rng = np.random.default_rng(0)
    n = 12
    tab = pd.DataFrame({k: rng.uniform(lo, hi, n).astype(np.float32) for k, (lo, hi, _) in PARAM_SPEC.items()})
    tab["glasses"] = (np.arange(n) % 3 == 0).astype(np.float32)
    tab["quality_defect"] = (np.arange(n) % 4 == 0).astype(np.float32)
    a_rgb, a_mask = render_batch(tab)
    b_rgb, b_mask = render_batch(tab)
    assert a_rgb.tobytes() == b_rgb.tobytes() and a_mask.tobytes() == b_mask.tobytes()
    c_rgb, c_mask = render_batch({k: tab[k].to_numpy() for k in tab.columns})     # dict input
    assert np.array_equal(a_rgb, c_rgb) and np.array_equal(a_mask, c_mask)
    for i in (0, 5):
        rgb, mask = render(tab.iloc[i].to_dict())
        assert np.array_equal(rgb, a_rgb[i]) and np.array_equal(mask, a_mask[i])
    # different parameters -> different images
    assert not np.array_equal(a_rgb[0], a_rgb[1])


def test_eyes_openness_grows_the_eye_mask():
    heights = [eye_height(render({"eyes_open": v})[1]) for v in np.linspace(0, 1, 9)]
    assert all(b >= a for a, b in zip(heights, heights[1:])), heights
    assert heights[0] <= 2, heights                  # nearly closed
    assert heights[-1] >= 6 and heights[-1] >= 3 * heights[0], heights
    # eyes sit inside the stage-4 eye windows (rows [H/4, 3H/4))
    m = render({})[1]
    rows = np.nonzero(np.isin(m, (4, 5)))[0]
    assert rows.min() >= RES // 4 and rows.max() < 3 * RES // 4
    c4, c5 = np.nonzero(m == 4)[1], np.nonzero(m == 5)[1]
    assert c4.max() < 3 * RES // 4 and c5.min() >= RES // 4 and c4.mean() < c5.mean()
    for k in (4, 5):                                 # 10-14 px wide at 128
        w = np.ptp(np.nonzero(m == k)[1]) + 1
        assert 10 <= w <= 15, w


def test_mouth_closed_has_no_inner_mouth_and_opening_grows_it():
    counts = [int((render({"mouth_open": v})[1] == 8).sum()) for v in np.linspace(0, 1, 9)]
    assert counts[0] == 0
    assert all(b >= a for a, b in zip(counts, counts[1:])), counts
    assert counts[4] > 40 and counts[-1] > 150, counts
    for v in (0.0, 1.0):                             # closed faces keep their lips
        m = render({"mouth_open": v})[1]
        assert (m == 7).sum() > 20 and (m == 9).sum() > 20
    m = render({"mouth_open": 0.6})[1]
    cols = np.nonzero(np.isin(m, (7, 8, 9)))[1]
    assert np.ptp(cols) + 1 >= 20                    # mouth >= 20 px wide when open


def test_hair_length_reaches_bottom_rows_on_both_sides():
    short = render({"hair_length": 0.0})[1]
    long_ = render({"hair_length": 1.0})[1]
    assert (short[3 * RES // 4:] == 10).sum() == 0
    bottom = long_[-1] == 10
    assert bottom[:RES // 2].sum() >= 10 and bottom[RES // 2:].sum() >= 10
    # hair-length score (rows of the lower 3/4 with >= 20/224 of the width in hair) grows with the length
    thr = int(np.ceil(20 * RES / 224))
    rows = [int(((render({"hair_length": v})[1][RES // 4:] == 10).sum(1) >= thr).sum()) for v in np.linspace(0, 1, 6)]
    assert all(b >= a for a, b in zip(rows, rows[1:])) and rows[-1] == RES - RES // 4, rows


def test_quality_defect_blurs_the_top_centre_strip_only():
    base = {"bg_std": 0.6, "hairstyle": 0.8, "hair_color": 0.5}
    ok_rgb, ok_mask = render(base)
    bad_rgb, bad_mask = render({**base, "quality_defect": 1.0, "defect_severity": 0.0})
    q = RES // 4
    strip = (slice(0, q), slice(q, 3 * q))
    assert lap_var(bad_rgb[strip]) < 0.1 * lap_var(ok_rgb[strip])
    assert np.array_equal(ok_mask, bad_mask)         # the mask keeps the clean geometry
    assert np.array_equal(ok_rgb[int(0.35 * RES):], bad_rgb[int(0.35 * RES):])


def test_glasses_change_rgb_but_not_the_mask():
    a_rgb, a_mask = render({"glasses": 0.0})
    b_rgb, b_mask = render({"glasses": 1.0})
    assert np.array_equal(a_mask, b_mask)
    diff = np.abs(a_rgb.astype(int) - b_rgb.astype(int)).sum(-1) > 30
    rows = np.nonzero(diff)[0]
    assert diff.sum() > 100
    assert rows.min() >= int(0.3 * RES) and rows.max() < int(0.55 * RES)   # inside the eye band


def test_pose_tilts_the_eye_line_monotonically_and_shifts_features():
    poses = np.linspace(-1, 1, 9)
    masks = [render({"pose": v})[1] for v in poses]
    slopes = [eye_slope(m) for m in masks]
    assert all(b > a for a, b in zip(slopes, slopes[1:])), slopes
    assert abs(slopes[4]) < 0.02 and slopes[-1] > 0.3 and slopes[0] < -0.3
    nose_x = [np.nonzero(m == 6)[1].mean() for m in masks]
    assert nose_x[-1] - nose_x[4] > 3 and nose_x[4] - nose_x[0] > 3


def test_hair_background_and_style_factors_are_measurable():
    def hair_mean(rgb, mask):
        return rgb[mask == 10].mean()
    hc = [hair_mean(*render({"hair_color": v})) for v in np.linspace(0, 1, 6)]
    assert all(b > a for a, b in zip(hc, hc[1:])) and hc[-1] - hc[0] > 120, hc

    def bg_stats(rgb, mask):
        """Stage-4 rule: background pixels of the upper half, lowest and highest 5 % dropped."""
        g = np.sort(rgb[:RES // 2].mean(-1)[mask[:RES // 2] == 0])
        g = g[int(0.05 * len(g)):int(0.95 * len(g))]
        return g.mean(), g.std()
    bm = [bg_stats(*render({"bg_mean": v}))[0] for v in np.linspace(0, 1, 6)]
    bs = [bg_stats(*render({"bg_std": v}))[1] for v in np.linspace(0, 1, 6)]
    assert all(b > a for a, b in zip(bm, bm[1:])) and bm[-1] - bm[0] > 150, bm
    assert all(b > a for a, b in zip(bs, bs[1:])) and bs[-1] > 8 * bs[0], bs

    def vh_ratio(rgb, mask):
        """Vertical / horizontal texture contrast in the hair of the lower half (the hairstyle score's idea)."""
        g = rgb.astype(np.float32).mean(-1)
        h = (mask == 10)
        d = 4
        y0 = RES // 2
        v = np.abs(g[y0 + d:] - g[y0:-d])[h[y0 + d:] & h[y0:-d]].mean()
        hh = np.abs(g[y0:, d:] - g[y0:, :-d])[h[y0:, d:] & h[y0:, :-d]].mean()
        return v / hh
    straight = vh_ratio(*render({"hair_length": 0.9, "hairstyle": 0.0}))
    curly = vh_ratio(*render({"hair_length": 0.9, "hairstyle": 1.0}))
    assert curly > 1.5 * straight, (straight, curly)


def test_gender_age_cues_change_the_face():
    f_rgb, f_mask = render({"female": 1.0, "hair_length": 0.5})
    m_rgb, m_mask = render({"female": 0.0, "hair_length": 0.5})
    brows = lambda m: int(np.isin(m, (2, 3)).sum())
    assert brows(m_mask) > 1.3 * brows(f_mask)        # thicker male brows
    assert np.abs(f_rgb.astype(int) - m_rgb.astype(int)).mean() > 5
    y_rgb, y_mask = render({"age": 0.1})
    o_rgb, _ = render({"age": 0.95})
    face = y_mask == 1
    assert lap_var(np.where(face[..., None], o_rgb, 0).astype(np.uint8)) > \
        lap_var(np.where(face[..., None], y_rgb, 0).astype(np.uint8))         # wrinkles add detail


def test_out_of_range_and_missing_params_are_handled():
    rgb, mask = render({"pose": 5.0, "eyes_open": -1.0, "unknown": 3.0})
    rgb2, mask2 = render({"pose": 1.0, "eyes_open": 0.0})
    assert np.array_equal(rgb, rgb2) and np.array_equal(mask, mask2)


def test_colorize_and_contact_sheet():
    rgb, mask = render({"mouth_open": 0.5}, 64)
    col = colorize_mask(mask)
    assert col.shape == (64, 64, 3) and col.dtype == np.uint8
    assert np.array_equal(col[mask == 10][0], [255, 0, 102]) and np.array_equal(col[mask == 1][0], [0, 153, 255])
    sheet = contact_sheet(np.stack([rgb] * 5), ncols=3, pad=2)
    assert sheet.shape == (2 * 64 + 3 * 2, 3 * 64 + 4 * 2, 3)
    assert np.array_equal(sheet[2:66, 2:66], rgb)
