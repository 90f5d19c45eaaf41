"""The synthface default segmenter: shapes, strict loading, shipped accuracy, IoU helpers, training resume."""
import numpy as np
import pytest
import torch

from pipeline.profiles import REPO_ROOT, load_profile
from segmentation.synth_segmenter import (NO_AUGMENT, AugmentSettings, SegmenterConfig, SynthSegmenter, augment,
                                          confusion_matrix, count_parameters, iou_scores, load_segmenter,
                                          per_image_mean_iou, save_segmenter, segmenter_state)
from synthface.segmenter_training import SegTrainSettings, train_segmenter
from pipeline.checkpoint import CheckpointError, save_checkpoint
from pipeline.vocabulary import CLASS_NAMES
from synthface.world import WorldMap

WEIGHTS = REPO_ROOT / "synthface" / "weights" / "segmenter.pth"


@pytest.fixture(scope="module")
def shipped():
    return load_segmenter(WEIGHTS)


def test_model_shapes_and_class_count():
    m = SynthSegmenter().eval()
    assert count_parameters(m) == 788_299
    with torch.inference_mode():
        assert m(torch.randn(2, 3, 224, 224)).shape == (2, 11, 224, 224)
        assert m(torch.randn(1, 3, 128, 128)).shape == (1, 11, 128, 128)
    assert len(CLASS_NAMES) == 11 and m.cfg.num_classes == 11


def test_shipped_weights_load_strictly_and_stay_small(shipped, tmp_path):
    assert WEIGHTS.stat().st_size <= 5 * 2**20
    assert not shipped.training and not any(p.requires_grad for p in shipped.parameters())
    assert prof_checkpoint() == "synthface/weights/segmenter.pth"
    st = segmenter_state(shipped)
    assert all(v.dtype == torch.float32 for v in st["state_dict"].values() if v.is_floating_point())
    # a missing, an unexpected and a mis-shaped key are each named
    bad = dict(st, state_dict=dict(st["state_dict"]))
    bad["state_dict"].pop("net.head.bias")
    bad["state_dict"]["net.extra"] = torch.zeros(1)
    bad["state_dict"]["net.head.weight"] = torch.zeros(3, 3)
    save_checkpoint(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as e:
        load_segmenter(tmp_path / "bad.pth")
    msg = str(e.value)
    assert "net.head.bias" in msg and "net.extra" in msg and "net.head.weight" in msg
    save_checkpoint({"generator": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a synthface segmenter"):
        load_segmenter(tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="train_segmenter"):
        load_segmenter(tmp_path / "missing.pth")


def prof_checkpoint():
    return load_profile("synthface")["segmentation"]["checkpoint"]


def test_shipped_segmenter_parses_renders(shipped):
    """Mean IoU over the 11 classes >= 0.9 on held-out renders, through the stage-3 path (224 crops)."""
    from synthface.evaluate_segmenter import evaluate_segmenter
    res = evaluate_segmenter(shipped, None, WorldMap(256, 0), n=48, seed=4_242, resolution=128)
    r = res["renders"]
    assert r["mean_iou"] >= 0.9, r
    assert all(v >= 0.75 for v in r["per_class"].values()), r["per_class"]
    assert r["per_class"]["background"] > 0.97 and r["per_class"]["hair"] > 0.95


def test_iou_helpers_on_known_numbers():
    true = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 2]], np.uint8)
    cm = confusion_matrix(pred, true, 3)
    assert cm.tolist() == [[3, 1, 0], [0, 3, 1], [0, 0, 0]]
    s = iou_scores(cm, ["a", "b", "c"])
    assert s["per_class"]["a"] == pytest.approx(3 / 4) and s["per_class"]["b"] == pytest.approx(3 / 5)
    assert s["per_class"]["c"] == 0.0                      # predicted but absent: counts as 0
    assert s["mean_iou"] == pytest.approx((0.75 + 0.6 + 0.0) / 3)
    assert s["pixel_accuracy"] == pytest.approx(6 / 8)
    absent = iou_scores(confusion_matrix(true, true, 3), ["a", "b", "c"])
    assert absent["per_class"]["c"] is None and absent["mean_iou"] == 1.0
    per = per_image_mean_iou(np.stack([pred, true]), np.stack([true, true]), 3)
    assert per[0] == pytest.approx((0.75 + 0.6 + 0.0) / 3) and per[1] == 1.0


def test_augment_is_seeded_and_degrades():
    world = WorldMap(256, 0)
    from synthface.renderer import render_batch
    rgb, _ = render_batch(world.truth(world.sample_z(6, seed=3)), resolution=128)
    a = augment(rgb, np.random.default_rng(1), AugmentSettings())
    b = augment(rgb, np.random.default_rng(1), AugmentSettings())
    assert a.dtype == np.uint8 and a.shape == rgb.shape and np.array_equal(a, b)
    assert np.abs(a.astype(int) - rgb).mean() > 2.0
    assert np.array_equal(augment(rgb, np.random.default_rng(1), NO_AUGMENT), rgb)
    # softening lowers the high-frequency energy (what generated images lack)
    soft = augment(rgb, np.random.default_rng(2), AugmentSettings(p_soften=1.0, p_resize=0.0, p_color=0, p_jpeg=0,
                                                                    p_noise=0, p_smooth=0))
    lap = lambda x: np.abs(np.diff(x.astype(np.float32), axis=2)).mean()   # noqa: E731
    assert lap(soft) < 0.8 * lap(rgb)


def test_training_learns_and_resumes_exactly(tmp_path):
    world = WorldMap(256, 0)
    s = SegTrainSettings(steps=6, batch_size=2, widths=(4, 8, 8), val_every=3, val_size=4, ckpt_every=2, log_every=1,
                         lr=1e-2)
    whole = train_segmenter(world, tmp_path / "whole", s, show_progress=False)
    assert whole["finished"] and len(whole["log"]) == 6 and [r["step"] for r in whole["val_log"]] == [3, 6]
    part = train_segmenter(world, tmp_path / "part", s, show_progress=False, stop_after=4)
    assert not part["finished"] and part["step"] == 4
    resumed = train_segmenter(world, tmp_path / "part", s, show_progress=False)
    assert resumed["finished"] and [r["step"] for r in resumed["log"]] == list(range(1, 7))
    for (k, a), b in zip(whole["model"].state_dict().items(), resumed["model"].state_dict().values()):
        assert torch.equal(a, b), k
    assert whole["log"][-1]["loss"] == resumed["log"][-1]["loss"]
    with pytest.raises(ValueError, match="other training settings"):
        train_segmenter(world, tmp_path / "part", SegTrainSettings(**{**s.__dict__, "lr": 1e-3}), show_progress=False)
    # round trip through the shipped checkpoint format
    save_segmenter(whole["model"], tmp_path / "seg.pth", meta={"steps": 6})
    back = load_segmenter(tmp_path / "seg.pth")
    assert back.cfg == SegmenterConfig(widths=(4, 8, 8))
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(back(x), whole["model"].eval()(x))


def test_adaptation_starts_from_weights_and_mixes_generated_images(tmp_path):
    """generated_share: part of each batch comes from the generator (with the render's true mask);
    init_weights: training starts from a checkpoint."""
    world = WorldMap(256, 0)
    base = SegTrainSettings(steps=2, batch_size=4, widths=(4, 8, 8), val_every=2, val_size=4, ckpt_every=2, lr=1e-3)
    first = train_segmenter(world, tmp_path / "base", base, show_progress=False)
    save_segmenter(first["model"], tmp_path / "base.pth")
    from stylegan import GeneratorConfig, StyleGANGenerator
    g = StyleGANGenerator(GeneratorConfig.from_dict(
        {"resolution": 128, "z_dim": 256, "w_dim": 8, "mapping_layers": 1, "mapping_fmaps": 8,
         "fmaps_base": 256, "fmaps_max": 8})).eval()
    calls = []
    g.synthesis.register_forward_hook(lambda m, i, o: calls.append(o["image"].shape[0]))
    s = SegTrainSettings(**{**base.__dict__, "generated_share": 0.5, "init_weights": str(tmp_path / "base.pth")})
    with pytest.raises(ValueError, match="needs the generator"):
        train_segmenter(world, tmp_path / "nog", s, show_progress=False)
    adapted = train_segmenter(world, tmp_path / "adapt", s, show_progress=False, generator=g)
    assert calls == [2, 2]                                  # half of each 4-image batch, two steps
    # started from the checkpoint: after 2 small steps it is closer to it than a fresh init is
    a, b = adapted["model"].state_dict(), first["model"].state_dict()
    fresh = SynthSegmenter(SegmenterConfig(widths=(4, 8, 8))).state_dict()
    k = "net.head.weight"
    assert (a[k] - b[k]).abs().mean() < (fresh[k] - b[k]).abs().mean()
