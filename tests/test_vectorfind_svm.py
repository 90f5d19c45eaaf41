"""vectorfind: sampling (seeded / original order) and the SVM method on a tiny generator."""
import random

import numpy as np
import pytest
import torch

from tests.vectorfind_tiny import TinyMidGenerator, TinyScorer
from vectorfind.directions import apply
from vectorfind.groups import GROUP_ORDER, Medians
from vectorfind.protocols import MidGenerator, PropertyScorer, scores_as_dict
from vectorfind.sampling import case_latents, draw_latents, jpeg_round_trip, sample, scorer_input
from vectorfind.svm import SVM_SETTINGS, fit_one, fit_svm_from_samples, split_classes


@pytest.fixture(scope="module")
def gen():
    return TinyMidGenerator()


@pytest.fixture(scope="module")
def samples_w(gen):
    return sample(gen, TinyScorer(gen), "w", 1600, seed=5, batch_size=64)


def test_protocols_hold_for_the_tiny_pair(gen):
    assert isinstance(gen, MidGenerator) and isinstance(TinyScorer(gen), PropertyScorer)
    arr = TinyScorer(gen, as_array=True)(gen.image_from_mid(torch.zeros(2, 12), "w"))
    assert set(scores_as_dict(arr, n=2)) >= {"eyes", "hairstyle"}
    with pytest.raises(ValueError, match="shape"):
        scores_as_dict(np.zeros((2, 7)))


def test_seeded_latents_do_not_depend_on_n_and_original_order_is_z_then_label():
    z4, l4 = draw_latents(4, 16, 7, seed=3)
    z9, l9 = draw_latents(9, 16, 7, seed=3)
    assert np.array_equal(z4, z9[:4]) and np.array_equal(l4, l9[:4]) and z4.dtype == np.float32
    zo, lo = draw_latents(45, 16, 7, seed=3, rng_order="original")
    assert zo.shape == (40, 16) and lo.shape == (40, 7)           # chunks of 20: remainder dropped
    rs = np.random.RandomState(3)
    ref_z = rs.normal(0, 1, size=(45, 16))
    ref_l = rs.normal(0, 1, size=(45, 7))
    assert np.array_equal(zo, ref_z[:40].astype(np.float32)) and np.array_equal(lo, ref_l[:40].astype(np.float32))
    cz, cl = case_latents(range(3), 16, 7, seed=1, rng_order="original")
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(1, 16, generator=g), torch.randn(1, 7, generator=g)
    assert np.array_equal(cz[0], a[0].numpy()) and np.array_equal(cl[0], b[0].numpy())
    sz, _ = case_latents([7, 2], 16, 7, seed=1)
    assert np.array_equal(sz[0], case_latents([7], 16, 7, seed=1)[0][0])


def test_sampling_points_and_scores(gen, samples_w):
    s = samples_w
    assert s.mid.shape == (1600, 12) and s.mid.dtype == np.float32 and s.scores["eyes"].dtype == np.float32
    # the tiny scorer reads w back: eyes = w[0] up to the uint8 quantisation
    assert np.abs(s.scores["eyes"] - s.mid[:, 0]).max() < 0.1
    s1 = sample(gen, TinyScorer(gen), "mapping_split1", 40, seed=5, batch_size=16)
    s2 = sample(gen, TinyScorer(gen), "mapping_split2", 40, seed=5, batch_size=7)
    assert s1.mid.shape == (40, 36) and s2.mid.shape == (40, 24)
    w2 = s2.mid[:, :12] + s2.mid[:, 12:]
    assert np.allclose(w2, s.mid[:40], atol=1e-5)                  # same seed -> same latents at every point
    assert np.allclose(s2.scores["mouth"], s.scores["mouth"][:40], atol=1e-3)


def test_scorer_input_uint8_and_jpeg():
    img = torch.linspace(-1, 1, 3 * 16 * 16).reshape(1, 3, 16, 16)
    x = scorer_input(img)
    u8 = np.clip((img.double().numpy() + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    assert torch.equal(x, torch.from_numpy(((u8 / 255.0 - 0.5) / 0.5).astype(np.float32)))
    j = scorer_input(img, jpeg=True)
    assert j.shape == x.shape and 0 < (j - x).abs().max() < 0.2   # JPEG changes pixels, a little
    flat = np.full((1, 16, 16, 3), 128, np.uint8)
    assert np.array_equal(jpeg_round_trip(flat), flat)


def test_split_classes_largest_first_and_80_percent():
    rng = random.Random(0)
    tr_l, va_l, tr_s, va_s = split_classes(np.arange(10), np.arange(100, 110), rng)
    ref = random.Random(0)
    assert tr_l + va_l == ref.sample(list(range(10)), 10) and tr_s + va_s == ref.sample(list(range(100, 110)), 10)
    assert len(tr_l) == 8 and len(va_s) == 2


def test_svm_settings_are_the_originals():
    assert SVM_SETTINGS == dict(penalty="l2", loss="squared_hinge", C=1.0, dual=True, tol=1e-4, max_iter=1000,
                                fit_intercept=True, intercept_scaling=1)


def test_svm_sign_convention_directions_decrease_the_property(gen, samples_w):
    med = Medians.from_scores(samples_w.scores)
    res = fit_svm_from_samples(samples_w, med, seed=0)
    assert len(res.directions.vectors) == 48 and set(res.table.group) == set(GROUP_ORDER)
    # eyes = w[0], mouth = w[3], pose = w[4]: every group's direction points along −e_i
    for p, i in (("eyes", 0), ("mouth", 3), ("pose", 4)):
        cos = [res.directions.vectors[(p, g)][i] for g in GROUP_ORDER]
        assert max(cos) < -0.5, (p, cos)
        assert np.median(cos) < -0.65            # a margin direction on ~100 samples per class, not exactly −e_i
        assert res.accuracy[p] > 0.9
    norms = [np.linalg.norm(v) for v in res.directions.vectors.values()]
    assert np.allclose(norms, 1.0, atol=1e-6)
    # +α·v lowers the measured property
    grp = samples_w.groups(med)[0]
    d = res.directions.for_group(grp)
    mid = samples_w.mid[:1]
    before = TinyScorer(gen)(gen.image_from_mid(torch.from_numpy(mid), "w"))["eyes"][0]
    after = TinyScorer(gen)(gen.image_from_mid(torch.from_numpy(apply(mid, {"eyes": 1.0}, d)), "w"))["eyes"][0]
    assert after < before - 0.5
    # k per group = floor(0.2 · size), train = floor(0.8 · k) per class
    row = res.table.iloc[0]
    assert row.k == max(int(0.2 * row.group_size), 1) and row.n_train == 2 * int(0.8 * row.k)


def test_svm_seeded_is_reproducible_and_original_order_uses_one_stream(samples_w):
    med = Medians.from_scores(samples_w.scores)
    kw = dict(properties=("mouth",))
    a = fit_svm_from_samples(samples_w, med, seed=4, **kw)
    b = fit_svm_from_samples(samples_w, med, seed=4, **kw)
    assert all(np.array_equal(a.directions.vectors[k], b.directions.vectors[k]) for k in a.directions.vectors)
    o1 = fit_svm_from_samples(samples_w, med, seed=4, rng_order="original", **kw)
    o2 = fit_svm_from_samples(samples_w, med, seed=4, rng_order="original", **kw)
    assert o1.table.correct.tolist() == o2.table.correct.tolist()


def test_svm_errors_name_the_problem(samples_w):
    with pytest.raises(ValueError, match="no sample"):
        fit_svm_from_samples(samples_w.head(10), Medians(9, 9, 9, 9))
    with pytest.raises(ValueError, match="no training sample"):
        fit_one(samples_w.mid, np.array([0]), np.array([1]), random.Random(0), what="eyes/hhhh")
