"""synthface world map P(z): marginals, entanglement, realism correlations (parameters and measured scores)."""
import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from synthface import PARAM_NAMES, PARAM_SPEC, WorldMap, render_batch

N = 20_000
MAIN = ["eyes_open", "mouth_open", "pose", "hair_color", "hair_length", "hairstyle", "bg_mean", "bg_std"]
TARGETS = {("eyes_open", "mouth_open"): -0.38, ("hair_length", "bg_std"): -0.17, ("hair_color", "bg_mean"): 0.14}


@pytest.fixture(scope="module")
def world():
    return WorldMap(z_dim=256, seed=0)


@pytest.fixture(scope="module")
def sample(world):
    z = world.sample_z(N, seed=123)
    return z, world.truth(z)


def skewness(x):
    x = np.asarray(x, np.float64)
    return float(((x - x.mean()) ** 3).mean() / x.std() ** 3)


def test_columns_dtypes_ranges(sample):
    z, t = sample
    assert z.dtype == np.float32 and z.shape == (N, 256)
    assert list(t.columns[:len(PARAM_NAMES)]) == PARAM_NAMES and {"old", "concept"} <= set(t.columns)
    assert all(t[c].dtype == np.float32 for c in t.columns)
    for name, (lo, hi, _) in PARAM_SPEC.items():
        assert t[name].min() >= lo and t[name].max() <= hi, name
    for flag in ("female", "quality_defect", "glasses", "old", "concept"):
        assert set(np.unique(t[flag])) <= {0.0, 1.0}
    # continuous factors cover their range
    for name in ("eyes_open", "mouth_open", "hair_color", "hair_length", "hairstyle", "bg_mean", "bg_std",
                 "skin_tone", "age"):
        lo, hi, _ = PARAM_SPEC[name]
        q = np.quantile(t[name], [0.01, 0.99])
        assert q[0] < lo + 0.2 * (hi - lo) and q[1] > hi - 0.25 * (hi - lo), (name, q)


def test_marginals(sample):
    _, t = sample
    assert abs(t.female.mean() - 0.55) < 0.02
    assert abs(t.quality_defect.mean() - 0.05) < 0.01
    assert abs(t.glasses.mean() - 0.15) < 0.02
    assert abs(t.old.mean() - 0.27) < 0.03
    assert abs((t.mouth_open == 0).mean() - 1 / 3) < 0.02          # a third of the mouths closed
    assert 2.0 <= skewness(t.pose) <= 4.0                            # long tail to one side
    assert -2.0 <= skewness(t.eyes_open) <= -0.5                     # shorter tail toward closed
    # realistic dependencies on the binary factors
    assert t.hair_length[t.female == 1].mean() > t.hair_length[t.female == 0].mean() + 0.2
    assert t.glasses[t.old == 1].mean() > t.glasses[t.old == 0].mean()
    assert t.hair_grey[t.old == 1].mean() > 0.3 > t.hair_grey[t.old == 0].mean()


def test_deterministic_seeded_and_torch_input(world, sample):
    z, t = sample
    assert np.array_equal(world.sample_z(8, seed=123), z[:8])
    t2 = WorldMap(z_dim=256, seed=0).truth(z[:50])
    assert t2.equals(t.iloc[:50].reset_index(drop=True))
    tt = world.truth(torch.from_numpy(z[:50]))
    assert tt.equals(t2)
    assert world.sample_z(4, seed=1, as_torch=True).dtype == torch.float32
    other = WorldMap(z_dim=256, seed=1).truth(z[:200])
    assert not np.allclose(other.eyes_open, t.eyes_open[:200])


def test_entangled_no_single_axis_but_all_of_z(sample):
    z, t = sample
    zc = (z - z.mean(0)) / z.std(0)
    for name in PARAM_NAMES:
        y = t[name].to_numpy(np.float64)
        y = (y - y.mean()) / y.std()
        r = zc.T.astype(np.float64) @ y / len(y)                    # corr with every z axis
        assert np.abs(r).max() < 0.3, name
        assert (r ** 2).max() < 0.10, name                          # no axis explains > 10 %
        if name in MAIN:
            # ... yet z as a whole (linearly) explains a lot, spread over many axes
            r2_all = float((r ** 2).sum())
            assert r2_all > 0.35, (name, r2_all)
            assert np.sort(r ** 2)[-10:].sum() < 0.5 * r2_all, name


def test_target_correlations_in_parameter_space(sample):
    _, t = sample
    kept = t[t.concept == 1]
    assert 0.3 < len(kept) / len(t) < 0.4
    c = kept[MAIN].corr()
    for (a, b), target in TARGETS.items():
        assert abs(c.loc[a, b] - target) < 0.08, (a, b, c.loc[a, b])
    for i, a in enumerate(MAIN):
        for b in MAIN[i + 1:]:
            if (a, b) not in TARGETS and (b, a) not in TARGETS:
                assert abs(c.loc[a, b]) < 0.1, (a, b, c.loc[a, b])


def stage4_scores(rgb: np.ndarray, mask: np.ndarray) -> dict:
    """Compact version of the stage-4 2nd-algorithm scores on the 224x224 resize (01 spec section 4.2)."""
    S = 224
    m = cv2.resize(mask, (S, S), interpolation=cv2.INTER_NEAREST)
    g = cv2.resize(rgb, (S, S), interpolation=cv2.INTER_CUBIC).astype(np.float64).mean(-1)
    out = {}
    heights, cent = [], []
    for k, (c0, c1) in ((4, (0, 168)), (5, (56, 224))):
        win = m[56:168, c0:c1] == k
        cols = win.any(0)
        if cols.any():
            first, last = np.argmax(win, 0), win.shape[0] - 1 - np.argmax(win[::-1], 0)
            heights.append((last - first)[cols].max())
            r, c = np.nonzero(win)
            cent.append((r.mean(), c.mean() + c0))
    out["eyes"] = max(heights) if heights else 0.0
    out["pose"] = (cent[1][0] - cent[0][0]) / (cent[1][1] - cent[0][1]) if len(cent) == 2 else 0.0
    n7, n8, n9 = (m == 7).sum(), (m == 8).sum(), (m == 9).sum()
    out["mouth"] = n8 / (n7 + n8 + n9) if n7 + n8 + n9 else 0.0
    h = np.sort(g[m == 10])
    out["hair_color"] = h[int(0.1 * len(h)):int(0.9 * len(h))].mean() if len(h) > 10 else 127.5
    cnt = (m == 10).sum(1)
    hl = float((cnt[56:] >= 20).sum())
    if cnt[223] >= 20:
        hl += max((m[223, :112] == 10).sum() - 10, 0) / 2 + max((m[223, 112:] == 10).sum() - 10, 0) / 2
    out["hair_length"] = hl
    b = np.sort(g[:112][m[:112] == 0])
    b = b[int(0.05 * len(b)):int(0.95 * len(b))]
    out["background_mean"], out["background_std"] = (b.mean(), b.std()) if len(b) > 1 else (192.0, 0.0)
    return out


def test_measured_stage4_scores_show_the_realism_targets(world):
    """Render concept faces and measure them like stage 4: the score correlations match the original's."""
    z = world.sample_z(4000, seed=7)
    t = world.truth(z)
    kept = t[t.concept == 1].reset_index(drop=True)
    rgb, mask = render_batch(kept, 128)
    s = pd.DataFrame([stage4_scores(a, b) for a, b in zip(rgb, mask)])
    c = s.corr()
    assert abs(c.loc["eyes", "mouth"] - (-0.38)) < 0.08, c.loc["eyes", "mouth"]
    assert abs(c.loc["hair_length", "background_std"] - (-0.17)) < 0.08
    assert abs(c.loc["hair_color", "background_mean"] - 0.14) < 0.08
    names = list(s.columns)
    pairs = {("eyes", "mouth"), ("hair_length", "background_std"), ("hair_color", "background_mean")}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if (a, b) not in pairs and (b, a) not in pairs:
                assert abs(c.loc[a, b]) < 0.1, (a, b, c.loc[a, b])
    assert abs((s.mouth == 0).mean() - 1 / 3) < 0.05
    assert 2.0 <= skewness(s.pose) <= 4.5
    assert skewness(s.eyes) < -0.3
    # each score follows its parameter
    for p, sc in (("eyes_open", "eyes"), ("mouth_open", "mouth"), ("pose", "pose"), ("hair_color", "hair_color"),
                  ("hair_length", "hair_length"), ("bg_mean", "background_mean"), ("bg_std", "background_std")):
        assert np.corrcoef(kept[p], s[sc])[0, 1] > 0.85, p


def test_render_z(world):
    z = world.sample_z(6, seed=3)
    rgb, mask, params = world.render_z(z, resolution=64, return_params=True)
    assert rgb.shape == (6, 64, 64, 3) and mask.shape == (6, 64, 64) and len(params) == 6
    rgb2, mask2 = render_batch(world.truth(z), 64)
    assert np.array_equal(rgb, rgb2) and np.array_equal(mask, mask2)
