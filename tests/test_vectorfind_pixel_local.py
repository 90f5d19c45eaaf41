"""vectorfind.pixel_local: the pixel metrics of a linear generator, the region-confined directions, the group set."""
import numpy as np
import pytest
import torch

from pipeline.vocabulary import CLASS_NAMES
from vectorfind.directions import DirectionSet
from vectorfind.pixel_local import local_direction_set, local_directions, pixel_metrics, region_mask

RES, DIM = 8, 6
EYES, MOUTH = CLASS_NAMES.index("left_eye"), CLASS_NAMES.index("inner_mouth")


class LinearGen:
    """image = (mid · A) as [3, RES, RES]: its Jacobian is A everywhere. Coordinate 0 moves only the eye
    pixels, 1 only the mouth's, the others every pixel outside both (so an edit confined to its region
    exists for any fitted direction)."""

    def __init__(self, seed=0):
        a = np.random.default_rng(seed).standard_normal((DIM, 3, RES * RES)) * 0.05
        eyes, mouth = region("eyes").reshape(1, -1), region("mouth").reshape(1, -1)
        a[0] *= eyes
        a[1] *= mouth
        a[2:] *= (1 - eyes) * (1 - mouth)
        self.a = a.reshape(DIM, -1)

    def image_from_mid(self, mid, point):
        return (torch.as_tensor(mid, dtype=torch.float64) @ torch.from_numpy(self.a)).float().reshape(-1, 3, RES, RES)


def labels():
    lab = np.zeros((RES, RES), np.int64)
    lab[1, 1] = EYES
    lab[6, 3:5] = MOUTH
    return lab


def parse(u8):
    return np.stack([labels()] * len(u8))


def region(p):
    classes = {"eyes": ("left_eye", "right_eye"), "mouth": ("upper_lip", "inner_mouth", "lower_lip")}[p]
    return region_mask(labels(), classes, dilate=1)


def changes(a, d, p):
    """(inside, outside) L2 size of the image change of direction d, for p's region."""
    x = (np.asarray(d) @ a).reshape(3, -1)
    m = region(p).reshape(1, -1)
    return np.linalg.norm(x * m), np.linalg.norm(x * (1 - m))


def test_region_mask_dilates_the_classes():
    m = region_mask(labels(), ("left_eye",), dilate=1)
    assert m[0:3, 0:3].sum() == 9 and m.sum() == 9
    assert region_mask(labels(), ("left_eye",), dilate=0).sum() == 1


def test_metrics_of_a_linear_generator_are_its_gram_matrices():
    g = LinearGen()
    mids = np.random.default_rng(1).standard_normal((3, DIM)).astype(np.float32)
    m = pixel_metrics(g, mids, "w", parse, dilate=1)
    np.testing.assert_allclose(m["all"], 3 * g.a @ g.a.T, rtol=1e-4, atol=1e-6)
    for p in ("eyes", "mouth"):
        ja = (g.a.reshape(DIM, 3, -1) * region(p).reshape(1, 1, -1)).reshape(DIM, -1)
        np.testing.assert_allclose(m[p], 3 * ja @ ja.T, rtol=1e-4, atol=1e-6)


def test_local_direction_keeps_the_inside_change_and_drops_the_outside_one():
    g = LinearGen()
    m = pixel_metrics(g, np.zeros((1, DIM), np.float32), "w", parse, dilate=1)
    unit = lambda x: np.asarray(x, np.float64) / np.linalg.norm(x)                          # noqa: E731
    v = {"eyes": unit([1, 0, 0.4, 0.4, 0, 0]), "mouth": unit([0, 1, 0, 0.3, 0.3, 0]), "pose": unit([0, 0, 0, 0, 0.3, 1])}
    d = local_directions(v, m, lam=1e-4)
    np.testing.assert_array_equal(d["pose"], v["pose"])                                   # pose kept
    for p in ("eyes", "mouth"):
        (vin, vout), (din, dout) = changes(g.a, v[p], p), changes(g.a, d[p], p)
        assert dout < 0.01 * vout                                 # moved onto the coordinate of its own region
        assert abs(din - vin) < 0.01 * vin and float(d[p] @ v[p]) > 0
    far = local_directions(v, m, lam=1e9)
    np.testing.assert_allclose(far["eyes"], v["eyes"], atol=1e-6)                           # the ridge alone: v


def test_directions_the_image_ignores_are_kept_not_used():
    """mapping_split2-like mid vectors (image of mid[:k] + mid[k:]): half of the directions do not change
    the image; the local direction must still change the own region as the fitted one does."""
    g = LinearGen()

    class Split:
        def image_from_mid(self, mid, point):
            mid = torch.as_tensor(mid)
            return g.image_from_mid(mid[:, :DIM] + mid[:, DIM:], point)

    m = pixel_metrics(Split(), np.zeros((1, 2 * DIM), np.float32), "mapping_split2", parse, dilate=1)
    rng = np.random.default_rng(4)
    v = {p: rng.standard_normal(2 * DIM) / np.sqrt(2 * DIM) for p in ("eyes", "mouth", "pose")}
    d = local_directions(v, m, lam=1e-3)
    for p in ("eyes", "mouth"):
        fold = lambda x: x[:DIM] + x[DIM:]                                                  # noqa: E731
        (vin, vout), (din, dout) = changes(g.a, fold(v[p]), p), changes(g.a, fold(d[p]), p)
        assert abs(din - vin) < 0.01 * vin and dout < 0.01 * vout


def test_group_set_is_made_local_group_by_group_and_round_trips(tmp_path):
    g = LinearGen()
    m = pixel_metrics(g, np.zeros((1, DIM), np.float32), "w", parse, dilate=1)
    rng = np.random.default_rng(3)
    ds = DirectionSet("w")
    for grp in ("hhhh", "llll"):
        for p in ("eyes", "mouth", "pose"):
            ds.vectors[(p, grp)] = rng.standard_normal(DIM) / np.sqrt(DIM)
    loc = local_direction_set(ds, m, lam=1e-3)
    for grp in ("hhhh", "llll"):
        want = local_directions(ds.for_group(grp), m, 1e-3)
        for p in want:
            np.testing.assert_array_equal(loc.vectors[(p, grp)], want[p])
    loc.save(tmp_path)
    back = DirectionSet.load(tmp_path, "w", groups=("hhhh", "llll"))
    np.testing.assert_allclose(back.vectors[("eyes", "hhhh")], loc.vectors[("eyes", "hhhh")], rtol=1e-6)
