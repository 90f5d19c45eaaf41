"""FineTune-v9 trainer: frozen sets, the step rule, the optimiser quirk, resume, the monitor and train_log.csv."""
import copy

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from stylegan.discriminator import DiscriminatorConfig
from stylegan.generator import GeneratorConfig
from stylegan_modified.v9 import build_v9_discriminator, build_v9_generator
from training.trainer import Trainer
from training.v9 import (LOG_COLUMNS, MonitorSettings, V9Monitor, V9Settings, V9Trainer, discriminator_trainable,
                         generator_trainable, is_log_point, jpeg_round_trip, log_row, run_step_rule, write_train_log)

G_CFG = GeneratorConfig(resolution=32, z_dim=32, w_dim=24, mapping_layers=4, mapping_fmaps=40, fmaps_base=256,
                        fmaps_max=32)
D_CFG = DiscriminatorConfig(resolution=32, fmaps_base=256, fmaps_max=32)


def make_trainer(**kw):
    g = build_v9_generator(G_CFG, seed=0)
    d = build_v9_discriminator(D_CFG, seed=1)
    return V9Trainer(g, d, V9Settings(**kw))


def reals(n=4, seed=0):
    return torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def snapshot(m):
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def test_trainable_sets_at_256():
    g = build_v9_generator(seed=0)
    d = build_v9_discriminator(seed=0)
    assert generator_trainable(g) == ["mapping"] + [f"synthesis.layer{i}" for i in range(6)] + \
        [f"synthesis.output{i}" for i in range(3)]
    assert discriminator_trainable(d) == ["input5", "input6"] + [f"layer{i}" for i in range(8, 15)]
    assert discriminator_trainable(build_v9_discriminator(D_CFG)) == [f"input{b}" for b in (2, 3)] + \
        [f"layer{i}" for i in range(2, 9)]


def test_step_changes_only_the_trainable_sets():
    tr = make_trainer()
    assert isinstance(tr, Trainer)
    g0, d0 = snapshot(tr.g), snapshot(tr.d)
    w_avg0 = tr.g.truncation.w_avg.clone()
    out = tr.train_step(reals(), torch.zeros(4, 7), 0, 0)
    assert out["d_train_count"] == 1 and 1 <= out["g_train_count"] <= 4
    assert 0.0 <= out["real_fake_auroc"] <= 1.0 and out["d_loss"] > 0 and out["g_loss"] > 0
    g_on, d_on = set(tr.g_trainable), set(tr.d_trainable)
    for name, before in g0.items():
        same = torch.equal(before, dict(tr.g.named_parameters())[name])
        assert same or name in g_on, f"frozen G parameter {name} changed"
    for name, before in d0.items():
        same = torch.equal(before, dict(tr.d.named_parameters())[name])
        assert same or name in d_on, f"frozen D parameter {name} changed"
    changed_g = [n for n in g_on if not torch.equal(g0[n], dict(tr.g.named_parameters())[n])]
    changed_d = [n for n in d_on if not torch.equal(d0[n], dict(tr.d.named_parameters())[n])]
    assert "mapping.dense_new1.weight" in changed_g and "synthesis.layer5.weight" in changed_g
    assert "layer8.weight" in changed_d and "input3.weight" not in changed_d     # unused at lod 0: no gradient
    assert not torch.equal(w_avg0, tr.g.truncation.w_avg)                      # w_avg tracked during training


def test_step_rule_counts_follow_the_loss_ratios():
    s = V9Settings()

    def script(values):
        it = iter(values)
        return lambda k: next(it)

    # first step: one D update whatever its loss
    assert run_step_rule(script([100.0]), script([0.1]), None, s)["d_train_count"] == 1
    # D continues while d >= 2.5 * last_g (= 5): 10, 9 continue, 1 stops; G continues while g >= 2 * d (= 2)
    out = run_step_rule(script([10.0, 9.0, 1.0]), script([5.0, 3.0, 1.0]), 2.0, s)
    assert (out["d_train_count"], out["g_train_count"], out["d_loss"], out["g_loss"]) == (3, 3, 1.0, 1.0)
    # caps at 4 and 4
    out = run_step_rule(script([9.0] * 4), script([20.0] * 4), 1.0, s)
    assert (out["d_train_count"], out["g_train_count"]) == (4, 4)
    # the boundary: d == 2.5 * last_g continues, g just below 2 * d stops
    out = run_step_rule(script([5.0, 4.9]), script([9.79]), 2.0, s)
    assert (out["d_train_count"], out["g_train_count"]) == (2, 1)

    # through the trainer, with scripted losses in place of the updates
    tr = make_trainer()
    d_losses, g_losses = iter([1.0, 3.0, 3.0, 0.5]), iter([1.0, 0.9, 0.1])
    tr.d_update = lambda x, e, st, k: (next(d_losses), {"rs": torch.ones(4), "fs": torch.zeros(4), "r1": 0.0})
    tr.g_update = lambda b, e, st, k: next(g_losses)
    a = tr.train_step(reals(), None, 0, 0)           # D 1 (first step); G: 1.0 >= 2 -> no: 1 update
    assert (a["d_train_count"], a["g_train_count"]) == (1, 1) and tr.last_g == 1.0
    b = tr.train_step(reals(), None, 0, 1)           # D: 3 >= 2.5, 3 >= 2.5, 0.5 < 2.5 -> 3; G: 0.9 >= 1.0? no -> 1
    assert (b["d_train_count"], b["g_train_count"]) == (3, 1) and b["real_fake_auroc"] == 1.0


def test_resume_draws_what_the_uninterrupted_run_draws():
    a = make_trainer()
    a.train_step(reals(seed=0), None, 0, 0)
    st = copy.deepcopy(a.state())
    a.train_step(reals(seed=1), None, 0, 1)
    b = make_trainer()
    b.load(st)
    b.train_step(reals(seed=1), None, 0, 1)
    for (k, v), (_, w) in zip(a.g.state_dict().items(), b.g.state_dict().items()):
        assert torch.equal(v, w), k
    assert a.last_g == b.last_g


def test_optimizer_over_all_parameters_option():
    on, off = make_trainer(optimizer_all_parameters=True), make_trainer(optimizer_all_parameters=False)
    n_all = sum(1 for _ in on.g.parameters())
    held = lambda t, name: sum(len(gr["params"]) for gr in t.opts[name].param_groups)     # noqa: E731
    assert held(on, "generator") == n_all and held(off, "generator") == len(on.g_trainable) < n_all
    assert held(on, "discriminator") == sum(1 for _ in on.d.parameters()) > held(off, "discriminator")
    # the optimiser state (what a resume file holds) differs; the parameters after a step do not: frozen
    # parameters never hold a gradient here, so AdamW (which skips grad-less parameters) leaves them alone
    on.train_step(reals(), None, 0, 0)
    off.train_step(reals(), None, 0, 0)
    assert len(on.state()["opt_generator"]["param_groups"][0]["params"]) == n_all
    for (k, v), (_, w) in zip(on.g.state_dict().items(), off.g.state_dict().items()):
        assert torch.allclose(v, w, atol=1e-6), k
    # ... and a frozen parameter that does hold a gradient is moved (weight decay + Adam) only by the "all" optimiser
    for t, moves in ((on, True), (off, False)):
        p = t.g.synthesis.layer7.weight                                       # 32x32: frozen
        before = p.detach().clone()
        p.grad = torch.zeros_like(p)
        t.opts["generator"].step()
        assert (not torch.equal(before, p.detach())) == moves


class DropoutMean(nn.Module):
    """A stand-in fold model on [0, 1] images: sigmoid of a dropout-ed, weighted pixel mean."""

    def __init__(self, seed):
        super().__init__()
        self.w = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(seed))
        self.drop = nn.Dropout(0.45)

    def forward(self, x):
        return torch.sigmoid((self.drop(x - 0.5) * self.w).flatten(1).mean(1) * 20)


def monitor(**kw):
    cnns = {p: [DropoutMean(10 * i + k) for k in range(5)] for i, p in enumerate(("gender", "quality", "age", "glass"))}
    return V9Monitor(cnns, MonitorSettings(n_images=6, **kw))


def test_monitor_options_change_the_scores_and_rounding_is_the_originals():
    g = build_v9_generator(G_CFG, seed=0)
    m_eval = monitor(jpeg_quality=None)
    imgs = m_eval.images(g, 0, 0)
    assert imgs.shape == (6, 32, 32, 3) and imgs.dtype == np.uint8
    base = m_eval.score(imgs)
    assert list(base.columns[:5]) == ["img_no", "gender_score", "quality_score", "age_score", "glass_score"]
    assert list(base.columns[5:9]) == [f"{p}_score_cnn_0" for p in ("gender", "quality", "age", "glass")]
    assert len(base.columns) == 25
    folds = base[[f"gender_score_cnn_{k}" for k in range(5)]].to_numpy()
    assert np.array_equal(folds, np.round(folds, 4))
    assert np.allclose(base["gender_score"], np.round(folds.mean(1), 4))
    assert base.equals(m_eval.score(imgs))                                           # eval mode: deterministic
    dropout = monitor(jpeg_quality=None, cnn_train_mode=True).score(imgs)
    assert not np.allclose(dropout["gender_score"], base["gender_score"])
    jpeg = monitor(jpeg_quality=95).score(imgs)
    assert not np.allclose(jpeg["gender_score"], base["gender_score"])
    rt = jpeg_round_trip(imgs, 95)
    assert rt.shape == imgs.shape and 0 < np.abs(rt.astype(int) - imgs).mean() < 40
    means, df, concept = m_eval.measure(g, 0, 0)
    assert set(means) == {"mean_gender_score", "mean_quality_score", "mean_age_score", "mean_glass_score"}
    assert means["mean_gender_score"] == round(float(df["gender_score"].mean()), 4) and concept == {}


def test_train_log_columns_exact_and_cadence(tmp_path):
    assert sum(is_log_point(0, i) for i in range(617)) == 34
    assert sum(is_log_point(5, i) for i in range(617)) == 13
    g = build_v9_generator(G_CFG, seed=0)
    tr = V9Trainer(g, build_v9_discriminator(D_CFG, seed=1), V9Settings(), monitor=monitor(), out_dir=tmp_path / "run")
    step = tr.train_step(reals(), None, 0, 0)                 # a log point: the trainer runs the monitor
    assert {"mean_gender_score", "mean_glass_score"} <= set(step)
    tr.train_step(reals(), None, 0, 11)                       # not a log point
    assert len(tr.log_rows) == 1 and len(tr.state()["log_rows"]) == 1
    run_log = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    assert len(run_log) == 2 and run_log[0] == "," + ",".join(LOG_COLUMNS)
    point = tmp_path / "run" / "inference_test_during_finetuning" / "epoch_0000_idx_0000" / "inference_test_result.csv"
    assert (point.read_text().splitlines()[0] == ",img_no,gender_score,quality_score,age_score,glass_score,"
            + ",".join(f"{p}_score_cnn_{k}" for k in range(5) for p in ("gender", "quality", "age", "glass")))
    assert (tmp_path / "run" / "concept_log.csv").is_file()
    row = log_row(step, {"mean_gender_score": 0.123456, "mean_quality_score": 1.0, "mean_age_score": 0.0,
                         "mean_glass_score": 0.5})
    assert row["mean_gender_score"] == 0.1235 and row["d_loss"] == round(step["d_loss"], 4)
    write_train_log(tmp_path / "train_log.csv", [row, row])
    header = (tmp_path / "train_log.csv").read_text().splitlines()[0]
    assert header == "," + ",".join(LOG_COLUMNS)
    assert header == (",epoch,idx,d_loss,g_loss,d_train_count,g_train_count,real_scores_mean,fake_scores_mean,"
                      "real_fake_auroc,mean_gender_score,mean_quality_score,mean_age_score,mean_glass_score")
    back = pd.read_csv(tmp_path / "train_log.csv", index_col=0)
    assert list(back.index) == [0, 1] and int(back["d_train_count"].iloc[0]) == 1
    with pytest.raises(KeyError, match="mean_glass_score"):
        log_row({k: v for k, v in step.items() if not k.startswith("mean_")}, {"mean_gender_score": 0.1})


def test_dropped_label_input_stays_dropped_through_training_steps():
    """``drop_label_input``: the output no longer depends on the label, and the zero-label training
    (AdamW over all parameters, weight decay on) leaves ``label_weight`` at exactly zero."""
    from stylegan_modified.conditional import synthesize
    from stylegan_modified.v9 import drop_label_input
    tr = make_trainer()
    done = drop_label_input(tr.g)
    assert done["label_weight_sq_norm_before"] > 0
    z = torch.randn(3, G_CFG.z_dim, generator=torch.Generator().manual_seed(4))
    y = torch.randn(3, 7, generator=torch.Generator().manual_seed(5))
    for step in range(2):
        tr.train_step(reals(), torch.zeros(4, 7), 0, step)
    assert torch.count_nonzero(tr.g.mapping.label_weight) == 0
    tr.g.eval()
    assert torch.equal(synthesize(tr.g, z, y), synthesize(tr.g, z, torch.zeros(3, 7)))
