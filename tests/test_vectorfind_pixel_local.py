"""vectorfind.pixel_local: the pixel metric of a linear generator, the constrained directions, the group set."""
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
    pixels, 1 only the mouth's, the others every pixel."""

    def __init__(self, seed=0):
        a = np.random.default_rng(seed).standard_normal((DIM, 3, RES * RES)) * 0.05
        a[0] *= (labels() == EYES).reshape(1, -1)
        a[1] *= (labels() == MOUTH).reshape(1, -1)
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


def outside(p):
    classes = {"eyes": ("left_eye", "right_eye"), "mouth": ("upper_lip", "inner_mouth", "lower_lip")}[p]
    return 1.0 - region_mask(labels(), classes, dilate=1)


def test_region_mask_dilates_the_classes():
    m = region_mask(labels(), ("left_eye",), dilate=1)
    assert m[0:3, 0:3].sum() == 9 and m.sum() == 9
    assert region_mask(labels(), ("left_eye",), dilate=0).sum() == 1


def test_metric_of_a_linear_generator_is_its_masked_gram_matrix():
    g = LinearGen()
    mids = np.random.default_rng(1).standard_normal((3, DIM)).astype(np.float32)
    m = pixel_metrics(g, mids, "w", parse, dilate=1)
    for p in ("eyes", "mouth"):
        ja = g.a.reshape(DIM, 3, -1) * outside(p).reshape(1, 1, -1)
        want = 3 * ja.reshape(DIM, -1) @ ja.reshape(DIM, -1).T
        np.testing.assert_allclose(m[p], want, rtol=1e-4, atol=1e-6)


def test_local_direction_keeps_the_constraints_and_changes_fewer_outside_pixels():
    g = LinearGen()
    m = pixel_metrics(g, np.zeros((1, DIM), np.float32), "w", parse, dilate=1)
    unit = lambda x: np.asarray(x, np.float64) / np.linalg.norm(x)                          # noqa: E731
    v = {"eyes": unit([1, 0, 1, 1, 0, 0]), "mouth": unit([0, 1, 0, 0.5, 1, 0]), "pose": unit([0, 0, 0, 0, 0.3, 1])}
    d = local_directions(v, m, lam=1e-3)
    far = local_directions(v, m, lam=1e9)        # the metric drowned: the shortest d with the same constraints
    c = np.stack([v[q] for q in ("eyes", "mouth", "pose")], axis=1)
    np.testing.assert_allclose(far["eyes"], c @ np.linalg.solve(c.T @ c, np.eye(3)[0]), atol=1e-6)
    np.testing.assert_array_equal(d["pose"], v["pose"])                                   # pose kept
    for p in ("eyes", "mouth"):
        assert float(d[p] @ v[p]) == pytest.approx(1.0, abs=1e-9)
        for q in v:
            if q != p:
                assert float(d[p] @ v[q]) == pytest.approx(0.0, abs=1e-9)
        change = lambda x: np.linalg.norm((x @ g.a).reshape(3, -1) * outside(p).reshape(1, -1))   # noqa: E731
        assert change(d[p]) < 0.05 * change(far[p])        # moved onto its own region's coordinate


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
