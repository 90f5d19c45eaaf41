"""Property-score CNN (spec 04 §3): layout at 256, crops as fractions, output order, scoring, training."""
import numpy as np
import pandas as pd
import pytest
import torch

from cnn.property_score_cnn import (P7, PropertyCNNSettings, PropertyScoreCNN, branch_crop, count_parameters,
                                    load_property_cnn, score_images)
from training.property_cnn import split_indices, train_property_cnn
from pipeline.checkpoint import CheckpointError
from tests.single_thread import one_thread  # noqa: F401  (autouse)

SPEC_256 = {   # branch: crop, fc1 weight, fc_final weight, entries, parameters (spec 04 §3.2)
    "eyes": ((96, 144, 64, 192), (256, 7168), (1, 256), 12, 1_965_697),
    "mouth": ((160, 208, 96, 160), (256, 3072), (1, 256), 12, 917_121),
    "pose": ((112, 160, 88, 168), (256, 10752), (1, 256), 14, 3_030_785),
    "hair_color": ((0, 256, 0, 256), (256, 4608), (1, 256), 16, 1_605_505),
    "hair_length": ((128, 256, 0, 256), (256, 6144), (1, 256), 16, 1_998_721),
    "background": ((0, 128, 0, 256), (256, 6144), (2, 256), 16, 1_998_978),
}
CONV_IO = [(32, 3), (64, 32), (64, 64), (128, 64), (128, 128), (128, 128)]


def test_layout_at_256_matches_the_original():
    m = PropertyScoreCNN(256)
    sd = m.state_dict()
    assert len(sd) == 86 and count_parameters(m) == 11_516_807
    order = [k.split(".")[0] for k in sd]
    assert list(dict.fromkeys(order)) == ["eyes_score_cnn", "mouth_score_cnn", "pose_score_cnn",
                                          "hair_color_score_cnn", "hair_length_score_cnn", "background_score_cnn"]
    for b, (crop, fc1, fc_final, entries, params) in SPEC_256.items():
        keys = [k for k in sd if k.startswith(f"{b}_score_cnn.")]
        n_conv = (entries - 4) // 2
        assert [k.split(".", 1)[1] for k in keys] == [f"conv{i}.0.{t}" for i in range(1, n_conv + 1)
                                                      for t in ("weight", "bias")] + [
            "fc1.0.weight", "fc1.0.bias", "fc_final.weight", "fc_final.bias"]
        for i in range(1, n_conv + 1):
            assert tuple(sd[f"{b}_score_cnn.conv{i}.0.weight"].shape) == (*CONV_IO[i - 1], 3, 3)
        assert tuple(sd[f"{b}_score_cnn.fc1.0.weight"].shape) == fc1
        assert tuple(sd[f"{b}_score_cnn.fc_final.weight"].shape) == fc_final
        assert tuple(sd[f"{b}_score_cnn.fc_final.bias"].shape) == (fc_final[0],)
        assert branch_crop(b, 256) == crop == getattr(m, f"{b}_score_cnn").crop
        assert count_parameters(getattr(m, f"{b}_score_cnn")) == params
    eyes = m.eyes_score_cnn
    assert [s[1:] for s in eyes.shapes] == [(3, 48, 128), (32, 46, 126), (64, 44, 124), (64, 22, 62), (64, 20, 60),
                                            (64, 10, 30), (128, 8, 28), (128, 4, 14)]
    blk = eyes.conv1
    assert isinstance(blk[1], torch.nn.LeakyReLU) and blk[1].negative_slope == 0.01
    assert isinstance(blk[2], torch.nn.Dropout2d) and blk[2].p == 0.05
    assert isinstance(eyes.fc1[1], torch.nn.Tanh) and eyes.fc1[2].p == 0.45


def test_crops_are_fractions_of_the_resolution_and_128_needs_padding():
    for b, (crop, *_rest) in SPEC_256.items():
        assert branch_crop(b, 128) == tuple(c // 2 for c in crop)
    with pytest.raises(ValueError, match="pose branch: the 24x40 crop at resolution 128 shrinks to nothing at "
                                         "layer conv5 \\(padding 0\\)"):
        PropertyScoreCNN(128)
    narrow = PropertyScoreCNN(128, width=0.25, padding=1, head_units=64)
    assert narrow.pose_score_cnn.conv1[0].out_channels == 8
    assert narrow.eyes_score_cnn.flatten == 32 * 3 * 8
    assert count_parameters(narrow) < count_parameters(PropertyScoreCNN(128, padding=1)) / 10
    custom = PropertyScoreCNN(128, width={"eyes": [4, 4, 8, 8], "pose": 0.5}, padding=1)
    assert [custom.eyes_score_cnn.get_submodule(f"conv{i}")[0].out_channels for i in range(1, 5)] == [4, 4, 8, 8]
    assert custom.pose_score_cnn.conv5[0].out_channels == 64 and custom.mouth_score_cnn.conv1[0].out_channels == 32
    with pytest.raises(ValueError, match="eyes branch: explicit channels must be 4"):
        PropertyScoreCNN(128, width={"eyes": [4, 4]}, padding=1)


def small(seed=0) -> PropertyScoreCNN:
    torch.manual_seed(seed)
    return PropertyScoreCNN(64, width=0.125, padding=1, head_units=16)


def test_output_is_in_p7_order():
    m = small().eval()
    with torch.no_grad():
        for b, branch in m.branches().items():
            branch.fc_final.weight.zero_()
            for j, name in enumerate(branch.outputs):
                branch.fc_final.bias[j] = P7.index(name) + 1
    out = m(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 7) and out[0].tolist() == [1, 2, 3, 4, 5, 6, 7]
    with pytest.raises(ValueError, match=r"expects images \[B, 3, 64, 64\]"):
        m(torch.zeros(2, 3, 32, 32))


def test_each_branch_sees_only_its_crop():
    m = small(1).eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    y = x.clone()
    r0, r1, c0, c1 = branch_crop("mouth", 64)
    y[:, :, r0:r1, c0:c1] = 0.0                        # change only the mouth box
    with torch.no_grad():
        a, b = m(x), m(y)
    changed = [p for i, p in enumerate(P7) if not torch.isclose(a[0, i], b[0, i], atol=1e-7)]
    assert "mouth" in changed and "eyes" not in changed and "background_mean" not in changed
    assert set(changed) <= {"mouth", "hair_color", "hair_length"}   # the whole-image / lower-half branches


def test_score_images_is_eval_mode_batched_and_restores_the_mode():
    m = small(2).train()
    imgs = torch.randint(0, 256, (10, 3, 64, 64), dtype=torch.uint8)
    a = score_images(m, imgs, batch_size=3)
    b = score_images(m, imgs.numpy(), batch_size=10)
    assert a.dtype == np.float32 and a.shape == (10, 7)
    assert np.allclose(a, b, atol=1e-5)                         # dropout off, batching irrelevant
    assert m.training                                           # mode restored
    with torch.no_grad():
        ref = m.eval()(imgs.float() / 127.5 - 1).numpy()
    assert np.allclose(a, ref, atol=1e-5)
    with torch.no_grad():
        m.train()
        noisy = m(imgs.float() / 127.5 - 1).numpy()
    assert not np.allclose(noisy, ref, atol=1e-4)               # train mode would have been noisy


def test_split_is_seeded_and_sized_like_the_original():
    tr, va = split_indices(4703, 0.1, seed=3)
    assert (len(tr), len(va)) == (4232, 471)
    assert len(np.union1d(tr, va)) == 4703
    tr2, va2 = split_indices(4703, 0.1, seed=3)
    assert np.array_equal(va, va2) and not np.array_equal(va, split_indices(4703, 0.1, seed=4)[1])


def synthetic_dataset(n=96, seed=0):
    """Noisy flat images whose seven targets are fixed multiples of the standardised brightness."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(40, 215, size=(n, 1, 1, 1))
    imgs = np.clip(level + rng.normal(0, 8, size=(n, 3, 64, 64)), 0, 255).astype(np.uint8)
    m = imgs.reshape(n, -1).mean(1)
    t = (m - m.mean()) / m.std()
    targets = np.stack([t * c for c in (1, -1, 0.5, 1, -0.5, 1, 0.3)], 1)
    return torch.from_numpy(imgs), targets                     # float64 targets: cast inside


SETTINGS = dict(resolution=64, width=0.125, padding=1, head_units=16, lr=3e-3, batch_size=16,
                valid_batch_size=32, seed=0)


def test_training_learns_a_trivial_target_and_writes_logs_and_best_checkpoint(tmp_path):
    imgs, targets = synthetic_dataset()
    s = PropertyCNNSettings(**SETTINGS, max_epochs=6, val_log_samples=5)
    res = train_property_cnn(imgs, targets, s, log_dir=tmp_path / "log", checkpoint_path=tmp_path / "cnn.pth",
                             progress=False)
    baseline = float(np.mean(targets[res.valid_idx] ** 2))      # MSE of predicting 0
    losses = [h["valid_loss"] for h in res.history]
    assert (len(res.train_idx), len(res.valid_idx)) == (86, 10) and res.epochs == 6
    assert min(losses) < baseline / 8                           # stated factor: 8x below the zero predictor
    assert res.best_epoch == int(np.argmin([h["val_loss_except_back_std"] for h in res.history]))
    assert not res.model.training
    log = pd.read_csv(tmp_path / "log" / "train_log.csv")
    assert len(log) == 6 and list(log.columns[:5]) == ["epoch", "train_loss", "lr", "valid_loss",
                                                       "val_loss_except_back_std"]
    assert {f"{p}_{k}" for p in P7 for k in ("loss", "abs_diff", "corr")} <= set(log.columns)
    row = log.iloc[res.best_epoch]
    assert np.isclose(row["val_loss_except_back_std"], np.mean([row[f"{p}_loss"] for p in P7[:6]]))
    assert np.isclose(row["valid_loss"], np.mean([row[f"{p}_loss"] for p in P7]))
    assert log["lr"].iloc[0] == 3e-3 and log["lr"].iloc[5] < log["lr"].iloc[1]          # cosine, stepped per epoch
    val = pd.read_csv(tmp_path / "log" / "val_log.csv")
    assert len(val) == 6 * 5 and (val.groupby("epoch")["img"].apply(list).map(tuple).nunique() == 1)
    loaded = load_property_cnn(tmp_path / "cnn.pth", 64, 0.125, 1, 16)
    assert np.array_equal(score_images(loaded, imgs[:8]), score_images(res.model, imgs[:8]))
    with pytest.raises(CheckpointError, match="mis-shaped keys"):
        load_property_cnn(tmp_path / "cnn.pth", 64, 0.25, 1, 16)


def test_training_is_seeded_and_stops_after_patience_epochs_without_improvement():
    imgs, targets = synthetic_dataset(n=40)
    frozen = PropertyCNNSettings(**{**SETTINGS, "lr": 0.0}, patience=2)        # nothing improves after epoch 0
    r = train_property_cnn(imgs, targets, frozen, progress=False)
    assert r.best_epoch == 0 and r.epochs == 3
    s = PropertyCNNSettings(**SETTINGS, max_epochs=2)
    a = train_property_cnn(imgs, targets, s, progress=False)
    b = train_property_cnn(imgs, targets, s, progress=False)
    assert a.history == b.history
    c = train_property_cnn(imgs, targets, PropertyCNNSettings(**{**SETTINGS, "seed": 1}, max_epochs=2), progress=False)
    assert c.history != a.history
    with pytest.raises(ValueError, match=r"targets must have shape \(40, 7\)"):
        train_property_cnn(imgs, targets[:, :6], s, progress=False)
    bad = targets.copy()
    bad[5, 3] = np.nan
    with pytest.raises(ValueError, match="targets row 5, column mouth is not finite"):
        train_property_cnn(imgs, bad, s, progress=False)
