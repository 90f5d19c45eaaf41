"""vectorfind: the gradient method's MLP (key names, sizes, training rule) and its directions."""
import numpy as np
import pytest
import torch

from tests.single_thread import one_thread  # noqa: F401
from tests.vectorfind_tiny import TinyMidGenerator, TinyScorer
from vectorfind.directions import apply
from vectorfind.gradient import (NN_KEYS, GradientNets, PropertyMLP, gradient_direction, hidden_sizes, load_mlp, predict,
                                 train_gradient_nets, train_property_mlp)
from vectorfind.sampling import sample


def test_mlp_keys_and_sizes_are_the_originals():
    assert hidden_sizes(512) == (896, 192) and hidden_sizes(2560) == (1408, 448) and hidden_sizes(1024) == (1024, 256)
    sd = PropertyMLP(1024).state_dict()
    assert tuple(sd) == NN_KEYS
    assert sd["fc1.0.weight"].shape == (1024, 1024) and sd["fc2.0.weight"].shape == (256, 1024)
    assert sd["fc_final.weight"].shape == (1, 256)
    m = load_mlp(PropertyMLP(512).state_dict())
    assert m.d == 512
    bad = dict(sd)
    bad["fc3.weight"] = bad.pop("fc_final.weight")
    with pytest.raises(KeyError, match="missing keys \\['fc_final.weight'\\], unexpected keys \\['fc3.weight'\\]"):
        load_mlp(bad)


def test_training_rule_stops_and_counts_epochs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    y = (x[:, 0] * 2).astype(np.float32)
    fit = train_property_mlp(x, y, seed=1, max_epochs=3, patience=15)
    assert fit.epochs == 4 and len(fit.history) == 4           # epochs 0..max_epochs
    assert fit.best_epoch == int(np.argmin(fit.history))        # first strict minimum
    assert fit.best_valid_loss == min(fit.history)
    assert fit.model.training                                   # a fresh module, as the original's
    again = train_property_mlp(x, y, seed=1, max_epochs=3, patience=15)
    assert again.history == fit.history and again.test_mse == fit.test_mse     # seeded
    # patience: a target of pure noise stops within patience epochs of the best one
    noise = rng.standard_normal(200).astype(np.float32)
    stop = train_property_mlp(x, noise, seed=2, max_epochs=200, patience=2, lr=1e-2)
    assert stop.epochs == stop.best_epoch + 3 and stop.epochs < 200
    with pytest.raises(ValueError, match=">= 10 samples"):
        train_property_mlp(x[:5], y[:5])


def test_gradient_direction_unit_float64_and_dropout_option():
    torch.manual_seed(0)
    m = PropertyMLP(16)
    mid = np.random.default_rng(1).standard_normal(16).astype(np.float32)
    v = gradient_direction(m, mid)
    assert v.dtype == np.float64 and v.shape == (16,) and np.isclose(np.linalg.norm(v), 1.0, atol=1e-6)
    leaf = torch.from_numpy(mid[None].copy()).requires_grad_(True)
    m.eval()
    m(leaf).sum().backward()
    g = leaf.grad.numpy()[0]
    assert np.allclose(v, g / np.linalg.norm(g), atol=1e-7)
    vd = gradient_direction(m, mid, dropout=True, dropout_seed=3)
    assert not np.allclose(vd, v) and np.allclose(vd, gradient_direction(m, mid, dropout=True, dropout_seed=3))
    assert m.training is False                                   # mode restored


def test_gradient_nets_learn_the_tiny_generators_properties():
    gen = TinyMidGenerator()
    s = sample(gen, TinyScorer(gen), "w", 800, seed=2, batch_size=100)
    nets = train_gradient_nets(s, seed=0, max_epochs=12, patience=4)
    assert set(nets.nets) == {"eyes", "mouth", "pose"}
    assert all(v < 0.35 for v in nets.test_mse.values()), nets.test_mse
    mid = s.mid[3]
    d = nets.directions(mid)
    # eyes = w[0]: the gradient points along +e0 (the sign convention of the gradient method: +α increases)
    assert d["eyes"][0] > 0.7 and d["mouth"][3] > 0.7 and d["pose"][4] > 0.7     # measured .83 / .87 / .79
    edited = apply(mid[None], {"eyes": 1.0}, d)
    sc = TinyScorer(gen)
    before = sc(gen.image_from_mid(torch.from_numpy(mid[None]), "w"))["eyes"][0]
    after = sc(gen.image_from_mid(torch.from_numpy(edited), "w"))["eyes"][0]
    assert after > before + 0.7
    pred = predict(nets.nets["eyes"], s.mid[:50])
    assert np.corrcoef(pred, s.scores["eyes"][:50])[0, 1] > 0.9


def _raw_grad(model, mid):
    x = torch.from_numpy(np.asarray(mid, np.float32)[None].copy()).requires_grad_(True)
    model.eval()
    model(x).sum().backward()
    return x.grad.numpy()[0].astype(np.float64)


def test_local_conditioning_is_off_by_default_and_orthogonal_when_on():
    torch.manual_seed(0)
    nets = GradientNets("w", {p: PropertyMLP(12) for p in ("eyes", "mouth", "pose")})
    side = {"hair_color": PropertyMLP(12), "hair_length": PropertyMLP(12)}
    mid = np.random.default_rng(1).standard_normal(12).astype(np.float32)
    plain = nets.directions(mid)
    # default: the original's plain gradients, unchanged by side nets that are not switched on
    assert np.array_equal(plain["eyes"], GradientNets("w", nets.nets, side=side).directions(mid)["eyes"])
    cond = GradientNets("w", nets.nets, side=side, conditional=True).directions(mid)
    g = {p: _raw_grad(m, mid) for p, m in {**nets.nets, **side}.items()}
    for p in ("eyes", "mouth", "pose"):
        assert np.linalg.norm(cond[p]) == pytest.approx(1.0, abs=1e-12)
        # to first order the edit leaves every other net's read-out unchanged ...
        for q, v in g.items():
            if q != p:
                assert abs(float(cond[p] @ v)) < 1e-6 * np.linalg.norm(v)
        # ... and still raises its own property's read-out
        assert float(cond[p] @ g[p]) > 0
        assert float(cond[p] @ plain[p]) < 1.0 - 1e-6           # it did change the direction
    # mixed keeps only the eyes net: conditioned on the side nets alone
    eyes_only = GradientNets("w", {"eyes": nets.nets["eyes"]}, side=side, conditional=True).directions(mid)
    assert abs(float(eyes_only["eyes"] @ g["mouth"])) > 1e-6
    assert abs(float(eyes_only["eyes"] @ g["hair_color"])) < 1e-6 * np.linalg.norm(g["hair_color"])


def test_project_out_rejects_a_direction_inside_the_span():
    from vectorfind.directions import project_out
    v = np.array([1.0, 2.0, 0.0])
    assert np.allclose(project_out(v, [np.array([1.0, 0.0, 0.0])]), [0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="span"):
        project_out(v, [np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])])
