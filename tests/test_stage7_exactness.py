"""Stage 7 exactness on the 256-px v9 generator (random init, CPU, small n): the adapter's points and
dims, one of the original's vector CSVs (built here in its format) loads and edits an image, the
float64 edit arithmetic, and the SVM sign convention (directions decrease the property)."""
import numpy as np
import pytest
import torch

from stylegan.generator import GeneratorConfig
from stylegan_modified.v9 import build_v9_generator
from vectorfind.directions import DirectionSet, apply, parse_vector_csv, vector_file_name
from vectorfind.groups import GROUP_ORDER
from vectorfind.protocols import POINTS, V9_MID_DIMS
from vectorfind.svm import fit_svm_directions
from vectorfind.v9_adapter import V9MidGenerator


@pytest.fixture(scope="module")
def gen():
    return V9MidGenerator(build_v9_generator(GeneratorConfig(), seed=3), batch_size=64)


@pytest.fixture(scope="module")
def latents():
    rng = np.random.default_rng(0)
    return rng.standard_normal((320, 512)).astype(np.float32), rng.standard_normal((320, 7)).astype(np.float32)


@torch.inference_mode()
def w_of(gen, mid, point):
    return gen.g.w_from_mid(mid, point)


def test_adapter_points_and_dims_are_the_originals(gen, latents):
    z, label = latents
    assert (gen.z_dim, gen.label_dim, gen.resolution) == (512, 7, 256)
    mids = gen.all_mids(z[:5], label[:5])
    for p in POINTS:
        assert gen.mid_dim(p) == V9_MID_DIMS[p] and mids[p].shape == (5, V9_MID_DIMS[p])
        torch.testing.assert_close(gen.mid_vectors(z[:5], label[:5], p), mids[p], rtol=0, atol=0)
    # every point is the same w: an edit (a, b) at mapping_split2 is the w edit a + b
    w = w_of(gen, mids["w"], "w")
    for p in ("mapping_split1", "mapping_split2"):
        torch.testing.assert_close(w_of(gen, mids[p], p), w, rtol=1e-5, atol=1e-4)
    a, b = torch.randn(1, 512), torch.randn(1, 512)
    edited = w_of(gen, mids["mapping_split2"] + torch.cat([a, b], 1), "mapping_split2")
    torch.testing.assert_close(edited, w + a + b, rtol=1e-5, atol=1e-4)


def _original_csv(v: np.ndarray) -> str:
    """A vector file as the original's pandas wrote it: header ',0,1,…', one row with index 0."""
    return ",".join([""] + [str(i) for i in range(len(v))]) + "\n0," + ",".join(repr(float(x)) for x in v) + "\n"


def test_an_original_vector_csv_loads_and_edits_an_image(gen, latents, tmp_path):
    rng = np.random.default_rng(1)
    dim = V9_MID_DIMS["mapping_split2"]
    vecs = {}
    for prop in ("eyes", "mouth", "pose"):
        for g in GROUP_ORDER:
            v = rng.standard_normal(dim).astype(np.float32)
            v /= np.linalg.norm(v)
            vecs[(prop, g)] = v
            (tmp_path / vector_file_name(prop, "mapping_split2", g)).write_text(_original_csv(v))
    ds = DirectionSet.load(tmp_path, "mapping_split2", dim=dim)
    assert ds.vectors[("mouth", "lhhl")].dtype == np.float64
    np.testing.assert_array_equal(ds.vectors[("mouth", "lhhl")], vecs[("mouth", "lhhl")].astype(np.float64))
    assert parse_vector_csv(tmp_path / vector_file_name("eyes", "mapping_split2", "hhhh")).shape == (dim,)
    z, label = latents
    mid = gen.mid_vectors(z[:1], label[:1], "mapping_split2").numpy()
    dirs = ds.for_group("lhhl")
    alphas = {"eyes": 1.2, "mouth": -1.8, "pose": 0.6}
    edited = apply(mid, alphas, dirs)
    # the original's arithmetic: float32 mid promoted to float64, terms in the order eyes, mouth, pose, one cast
    manual = (((mid.astype(np.float64) + 1.2 * dirs["eyes"]) + -1.8 * dirs["mouth"]) + 0.6 * dirs["pose"]).astype(np.float32)
    np.testing.assert_array_equal(edited, manual)
    assert edited.dtype == np.float32 and not np.array_equal(edited, mid)
    img = gen.image_from_mid(torch.from_numpy(edited), "mapping_split2")
    assert img.shape == (1, 3, 256, 256) and torch.isfinite(img).all()
    assert not torch.equal(img, gen.image_from_mid(torch.from_numpy(mid), "mapping_split2"))


@pytest.mark.parametrize("point", ["w", "mapping_split1", "mapping_split2"])
def test_svm_directions_decrease_the_property_at_256(gen, latents, point):
    z, label = latents
    mid = gen.mid_vectors(z, label, point).numpy()
    w = w_of(gen, torch.from_numpy(mid), point).numpy().astype(np.float64)
    rng = np.random.default_rng(2)
    axes = {p: rng.standard_normal(w.shape[1]) for p in ("eyes", "mouth", "pose")}
    scores = {p: (w @ u).astype(np.float32) for p, u in axes.items()}   # properties that grow along u in w
    groups = np.array([GROUP_ORDER[i % 16] for i in range(len(z))])
    res = fit_svm_directions(mid, scores, groups, point, ratio=0.4, seed=0)
    for p, u in axes.items():
        v = np.stack([res.directions.vectors[(p, g)] for g in GROUP_ORDER])
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
        # the w change of +v: w(mid + v) - w(mid) along u is negative for every group
        dw = w_of(gen, torch.from_numpy((mid[:1] + v).astype(np.float32)), point).numpy() - w[:1]
        assert (dw @ u < 0).all(), (p, dw @ u)


def test_the_exact_inference_path_gives_the_plain_images(gen, latents):
    """Stage 7 synthesises on the exact path (faster); its images are the plain path's, bit for bit."""
    z, label = latents
    mid = gen.mid_vectors(z[:4], label[:4], "mapping_split2")
    plain = V9MidGenerator(gen.g, 64, image_batch=2, path="plain").image_from_mid(mid, "mapping_split2")
    exact = V9MidGenerator(gen.g, 64, image_batch=2, path="exact").image_from_mid(mid, "mapping_split2")
    assert torch.equal(plain, exact)
    with pytest.raises(ValueError, match="inference path"):
        V9MidGenerator(gen.g, path="fast")
