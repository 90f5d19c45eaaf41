"""The editing API and its methods on a tiny v9 generator (issue 19)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.decomposition import PCA

from editing.calibrate import calibrate, measure_move
from editing.directions import EditDirections, project_out
from editing.edit import edit, mid_of, styles_of, w_of
from editing.ganspace import fit_ganspace
from editing.interfacegan import fit_interfacegan
from editing.label import label_directions
from editing.picking import draw_sample, pick_components
from editing.sefa import affine_matrix, fit_sefa
from editing.stylespace import fit_stylespace
from editing.vectorfind_adapter import case_editor, case_groups, fit_vectorfind, vectorfind_sample
from tests.editing_tiny import regions, scorer, tiny_generator
from tests.single_thread import one_thread  # noqa: F401
from tests.vectorfind_tiny import TinyMidGenerator, TinyScorer
from vectorfind.cases import alpha_table, case_directions, run_case
from vectorfind.directions import DirectionSet, apply
from vectorfind.gradient import GradientNets, PropertyMLP
from vectorfind.groups import GROUP_ORDER, Medians
from vectorfind.sampling import draw_latents


@pytest.fixture(scope="module")
def g():
    return tiny_generator()


@pytest.fixture(scope="module")
def sample(g):
    return draw_sample(g, scorer, 96, seed=1)


@pytest.fixture(scope="module")
def cases(g):
    z, label = draw_latents(6, g.cfg.z_dim, g.spec.label_dim, seed=3, stream=7)
    return torch.from_numpy(z), torch.from_numpy(label)


@pytest.fixture(scope="module")
def ifg(g, sample):
    return fit_interfacegan(g, sample=sample)


def test_sefa_directions_are_eigenvectors(g, sample):
    ds = fit_sefa(g, sample=sample, layers=(0, 2), k=6)
    a = affine_matrix(g, (0, 2))
    cols = torch.cat([getattr(g.synthesis, f"layer{i}").style.weight.detach().double()
                      * getattr(g.synthesis, f"layer{i}").style.scale for i in (0, 1)])
    assert torch.allclose(a, cols / cols.norm(dim=0, keepdim=True))
    vals, vecs = torch.linalg.eigh(a.T @ a)
    top = vecs[:, torch.argsort(vals, descending=True)[:6]].T.numpy()
    for p, pick in ds.meta["picks"].items():
        ref = top[pick["component"]]
        v = ds.vector(p)
        assert abs(abs(float(v @ ref)) - 1.0) < 1e-6                       # the same eigenvector (up to sign)
        assert np.abs(v - np.sign(v @ ref) * ref).max() < 1e-6             # float32 storage only
        assert ds.layers[p] == (0, 2)
    assert 8 <= ds.meta["samples_needed"] <= len(sample)
    assert ds.meta["eigenvalues"] == sorted(ds.meta["eigenvalues"], reverse=True)


def test_ganspace_components_are_sklearn_pca(g, sample):
    ds = fit_ganspace(g, sample=sample, n_pca=300, k=5, seed=2)
    w = draw_sample(g, None, 300, seed=2, stream=9101, score=False).w
    ref = PCA(n_components=5).fit(w.astype(np.float64)).components_
    for p, pick in ds.meta["picks"].items():
        v = ds.vector(p)
        r = ref[pick["component"]]
        assert np.abs(v - pick["sign"] * r * np.sign(r @ (pick["sign"] * v))).max() < 1e-5
        # the sign makes +α raise the property on the sample
        coord = (sample.w - sample.w.mean(0)) @ v
        assert np.corrcoef(coord, sample.scores[p])[0, 1] > 0


def test_pick_components_and_samples_needed():
    rng = np.random.default_rng(0)
    coords = rng.standard_normal((200, 5))
    scores = {"eyes": coords[:, 3] * 2 + 0.1 * rng.standard_normal(200), "mouth": -coords[:, 1],
              "pose": coords[:, 0] + coords[:, 4] * 0.2}
    picks, needed, history = pick_components(coords, scores)
    assert {p: v[:2] for p, v in picks.items()} == {"eyes": (3, 1.0), "mouth": (1, -1.0), "pose": (0, 1.0)}
    assert needed in [m for m, _ in history] and needed <= 32


def test_interfacegan_conditional_projection_is_orthogonal(ifg):
    for p in ("eyes", "mouth", "pose"):
        v = ifg.vector(p, conditional=True)
        assert abs(np.linalg.norm(v) - 1) < 1e-12
        for q in ("eyes", "mouth", "pose"):
            if q != p:
                assert abs(v @ ifg.vector(q)) < 1e-12
        # the conditional direction still points the same way
        assert v @ ifg.vector(p) > 0
    assert all(b["accuracy"] > 0.6 for b in ifg.meta["boundaries"].values())
    u = project_out(ifg.vector("eyes"), [ifg.vector("mouth")])
    assert abs(u @ ifg.vector("mouth")) < 1e-12


def test_interfacegan_edit_raises_property(g, ifg, cases):
    z, label = cases
    for p in ("eyes", "mouth", "pose"):
        move = measure_move(g, ifg, p, 2.0, z, label, scorer)
        assert move > 0, p


@pytest.mark.parametrize("space", ["w", "mapping_split1"])
def test_layer_wise_edit_leaves_other_layers_unchanged(g, cases, space):
    z, label = cases
    rng = np.random.default_rng(5)
    ds = EditDirections("random", space)
    for p in ("eyes", "mouth"):
        ds.add(p, rng.standard_normal(g.mid_dim(space)))
    base = edit(g, z, label, {"eyes": 0.0}, ds)
    res = edit(g, z, label, {"eyes": 3.0, "mouth": -2.0}, ds, layers={"eyes": (1, 3), "mouth": (2, 4)})
    wp0 = base.wp
    for layer in range(g.num_layers):
        same = torch.equal(res.wp[:, layer], wp0[:, layer])
        assert same == (layer not in (1, 2, 3)), layer
    # layer 2 holds both edits, layer 1 only eyes, layer 3 only mouth
    only_eyes = edit(g, z, label, {"eyes": 3.0}, ds)
    assert torch.equal(res.wp[:, 1], only_eyes.wp[:, 1])
    assert not torch.equal(res.wp[:, 2], only_eyes.wp[:, 2])
    # all layers: the same image as the stage-7 remaining net
    full = edit(g, z, label, {"eyes": 3.0, "mouth": -2.0}, ds)
    assert torch.equal(full.images, g.image_from_mid(full.mid, space))


def test_save_load_same_edit_bit_for_bit(g, ifg, cases, tmp_path):
    z, label = cases
    ifg.layers = {"pose": (0, 4)}
    ifg.scales = {"eyes": 1.37, "mouth": 0.5, "pose": 2.25}
    a = {"eyes": 1.2, "mouth": -0.7, "pose": np.linspace(-1, 1, len(z))}
    before = edit(g, z, label, a, ifg, conditional=True)
    back = EditDirections.load(ifg.save(tmp_path / "ifg"))
    after = edit(g, z, label, a, back, conditional=True)
    assert torch.equal(before.images, after.images) and torch.equal(before.mid, after.mid)
    assert back.scales == ifg.scales and back.layers == ifg.layers
    ifg.layers, ifg.scales = {}, {}


def test_vectorfind_adapters_and_gradient_round_trip(g, cases, tmp_path):
    z, label = cases
    svm = fit_vectorfind("svm", g, scorer, point="mapping_split1", n=640, seed=0)
    assert svm.space == "mapping_split1" and len(svm.groups) == 16
    grp = case_groups(scorer(g.image_from_mid(mid_of(g, z, label, "w"), "w")), Medians(**svm.meta["medians"]))
    res = edit(g, z, label, {"mouth": 1.0}, svm, group=grp)
    back = EditDirections.load(svm.save(tmp_path / "svm"))
    assert torch.equal(res.images, edit(g, z, label, {"mouth": 1.0}, back, group=grp).images)
    grad = fit_vectorfind("gradient", g, scorer, point="w", n=40, seed=0, gradient_kw={"max_epochs": 2})
    r1 = edit(g, z, label, {"eyes": 2.0, "pose": 1.0}, grad, conditional=True)
    back = EditDirections.load(grad.save(tmp_path / "grad"))
    r2 = edit(g, z, label, {"eyes": 2.0, "pose": 1.0}, back, conditional=True)
    assert torch.equal(r1.images, r2.images)


def test_stylespace_picks_local_channels_and_edits_styles(g, sample, cases):
    ds = fit_stylespace(g, scorer, regions, sample=sample, top=4, n_local=3)
    z, label = cases
    for p in ("eyes", "mouth"):
        pick = ds.meta["picks"][p]
        assert pick["locality"] == max(c["locality"] for c in ds.meta["candidates"][p]
                                       if c["rank_score"] == pick["rank_score"])
        res = edit(g, z, label, {p: 1.5}, ds)
        base = styles_of(g, w_of(g, mid_of(g, z, label, "w"), "w"))
        diff = (res.mid - base).abs()
        assert diff.max() > 1.4 and (diff > 1e-5).sum(dim=1).eq(1).all()
    zero = edit(g, z, label, {"eyes": 0.0}, ds)
    assert torch.equal(zero.images, g.image_from_mid(mid_of(g, z, label, "w"), "w"))


def test_label_reference_edits_the_label(g, cases):
    z, label = cases
    ds = label_directions(g.spec.label_names)
    res = edit(g, z, label, {"mouth": 0.5}, ds)
    i = g.spec.label_names.index("mouth")
    assert torch.allclose(res.mid[:, i], label[:, i] + 0.5)
    others = [j for j in range(label.shape[1]) if j != i]
    assert torch.equal(res.mid[:, others], label[:, others])
    with pytest.raises(ValueError, match="w-space"):
        edit(g, z, label, {"mouth": 0.5}, ds, layers=(0, 2))


def test_calibration_equalises_truth_moves(g, sample, ifg, cases):
    z, label = cases
    gs = fit_ganspace(g, sample=sample, n_pca=200, k=5)
    target = 0.05
    for ds in (ifg, gs):
        calibrate(g, ds, scorer, z, label, target=target, alpha_max=2.0, properties=("eyes", "mouth"))
        for p in ("eyes", "mouth"):
            move = measure_move(g, ds, p, 2.0 * ds.scales[p], z, label, scorer)
            assert abs(move - target) < 0.15 * target, (ds.method, p, move)
    ifg.scales = {}


def test_batching_does_not_change_the_edit(g, ifg, cases):
    z, label = cases
    a = {"eyes": np.arange(len(z), dtype=np.float64), "pose": 0.3}
    one, split = edit(g, z, label, a, ifg), edit(g, z, label, a, ifg, batch_size=4)
    assert torch.allclose(one.mid, split.mid, atol=1e-6) and torch.allclose(one.wp, split.wp, atol=1e-6)
    assert torch.allclose(one.images, split.images, atol=1e-5)


@pytest.mark.parametrize("method", ["svm", "gradient", "mixed"])
@pytest.mark.parametrize("dropout", [False, True])
def test_stage7_case_edit_through_the_api_is_vectorfinds_bit_for_bit(method, dropout):
    """Stage 7 edits its cases through editing.edit_mids (vectorfind_adapter.case_editor): the same
    float32 mid vectors as vectorfind's own directions + apply, SVM sign convention included."""
    rng = np.random.default_rng(5)
    svm = DirectionSet("w")
    for p in ("eyes", "mouth", "pose"):
        for grp in GROUP_ORDER:
            svm.add(p, grp, (lambda v: v / np.linalg.norm(v))(rng.standard_normal(12)).astype(np.float32))
    torch.manual_seed(0)
    nets = GradientNets("w", {p: PropertyMLP(12) for p in ("eyes", "mouth", "pose")})
    editor = case_editor(method, svm, nets, dropout)
    table = alpha_table(method, 1.5)
    alphas = {p: table[f"{p}_pm"].to_numpy() for p in ("eyes", "mouth", "pose")}
    for case in range(3):
        mid = rng.standard_normal(12).astype(np.float32) * 3
        group = GROUP_ORDER[case * 5]
        dirs = case_directions(method, mid, group, svm, nets, dropout, case)
        np.testing.assert_array_equal(editor(mid, alphas, group, case),
                                      apply(np.repeat(mid[None], 50, axis=0), alphas, dirs))
    # and a whole case of the test: the same table, scores and r with and without the editor
    gen = TinyMidGenerator()
    z, label = draw_latents(1, gen.z_dim, gen.label_dim, seed=0)
    kw = dict(svm=svm, nets=nets, medians=Medians(0, 0, 0, 0), jpeg=False, dropout=dropout, scale=1.5)
    a = run_case(gen, TinyScorer(gen), "w", method, 0, z[0], label[0], **kw)
    b = run_case(gen, TinyScorer(gen), "w", method, 0, z[0], label[0], editor=editor, **kw)
    pd.testing.assert_frame_equal(a.table, b.table)
    assert a.corr == b.corr and a.group == b.group


def test_vectorfind_options_share_one_sample(g):
    """The leaderboard fits svm and gradient on one drawn sample: the same sets as sampling twice."""
    drawn = vectorfind_sample(g, scorer, point="w", n=640, seed=0)
    kw = {"point": "w", "n": 640, "seed": 0}
    svm, svm0 = fit_vectorfind("svm", g, scorer, drawn=drawn, **kw), fit_vectorfind("svm", g, scorer, **kw)
    grad = fit_vectorfind("gradient", g, scorer, drawn=drawn, gradient_kw={"max_epochs": 2}, **kw)
    grad0 = fit_vectorfind("gradient", g, scorer, gradient_kw={"max_epochs": 2}, **kw)
    assert svm.vectors.keys() == svm0.vectors.keys()
    for k in svm.vectors:
        np.testing.assert_array_equal(svm.vectors[k], svm0.vectors[k])
    for p, sd in grad.nets.state_dicts().items():
        for key, t in sd.items():
            torch.testing.assert_close(t, grad0.nets.state_dicts()[p][key], rtol=0, atol=0)
    with pytest.raises(ValueError, match="expected 320"):
        fit_vectorfind("svm", g, scorer, point="w", n=320, seed=0, drawn=drawn)
