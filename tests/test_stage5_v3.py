"""Stage 5c: FineTune-v3 loss, options that restore the original, per-epoch test, checkpoints, resume."""
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from cnn.property_score_cnn import P7
from stylegan_modified import CVAEEncoder, FineTuneV3, build_generator
from stylegan_modified.distributed import DistContext
from training.cvae import LOG_COLUMNS, P3_IDX, V3Loss, V3Settings, V3Trainer
from evaluation.generation import GenerationTestSettings, run_generation_test
from stages.settings import TEST_DEFAULTS
from stages.bases import build_configs
from evaluation.networks import load_gender_cnn, load_property_cnn_for
from stages.settings import profile_section as stage5_settings
from stages.finetune_v3 import run_v3_stage
from tests.single_thread import one_thread  # noqa: F401
from tests.stage5_world import interrupted_then_resumed, world_with_property_cnn

EASY = {"min_r": {"eyes": -2.0, "mouth": -2.0, "pose": -2.0}, "max_mae": {"eyes": 1e9, "mouth": 1e9, "pose": 1e9}}
HARD = {"min_r": {"eyes": 2.0, "mouth": 2.0, "pose": 2.0}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return world_with_property_cnn(tmp_path_factory, "s5v3")


def v3_settings(prof, **kw) -> V3Settings:
    defaults = {f.name: f.default for f in dataclasses.fields(V3Settings)}
    return V3Settings(**{**stage5_settings(prof, "v3", defaults), **kw})


def tcfg(prof, **kw) -> dict:
    return {**stage5_settings(prof, "generation_test", dict(TEST_DEFAULTS)), **kw}


def model_for(prof, s: V3Settings, seed=0):
    gcfg, _ = build_configs(prof)
    g = build_generator(gcfg, "v3", seed=seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        enc = CVAEEncoder(64, 7, gcfg.z_dim, channels=(8, 8, 8, 8, 8), hidden=16)
    cnn = load_property_cnn_for(prof, prof.data_root / "stage5" / "property_cnn" / "property_score_cnn.pth")
    return FineTuneV3(enc, g, cnn, load_gender_cnn(prof.stage_dir("stage2"), s.gender_folds), gender_input=s.gender_input)


def batch(n=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 64, 64, generator=gen) * 2 - 1, torch.randn(n, 7, generator=gen)


def loss_parts(prof, **kw):
    s = v3_settings(prof, **kw)
    m = model_for(prof, s)
    x, y = batch()
    t = V3Trainer(m, np.random.default_rng(0).standard_normal((20, 7)).astype(np.float32), s, DistContext())
    y_gen = t.gen_labels(y, torch.Generator().manual_seed(1), len(y))
    eps = torch.randn(4, m.CVAE_encoder.z_dim, generator=torch.Generator().manual_seed(2))
    total, parts, diff, mu, logvar = V3Loss(m, s)(x, y, y_gen, eps, dropout_seed=5)
    return {k: float(v) for k, v in parts.items()}, y, y_gen


def test_loss_is_c_plus_g_plus_weighted_penalties(world):
    p, y, y_gen = loss_parts(world)
    assert y_gen is y                                                   # the original: the image's labels
    assert p["total_loss"] == pytest.approx(p["mse"] + p["gender_loss"] + 0.2 * p["mu_loss"] + 0.05 * p["logvar_loss"],
                                            rel=1e-5)
    assert set(p) == {"mse", "gender_loss", "mu_loss", "logvar_loss", "total_loss"}


def test_each_original_quirk_option_changes_the_loss(world):
    base, _, _ = loss_parts(world)
    assert loss_parts(world)[0] == base                                 # deterministic
    signed, _, _ = loss_parts(world, gender_input="signed")
    assert signed["gender_loss"] != base["gender_loss"] and signed["mse"] == base["mse"]
    fold0, _, _ = loss_parts(world, gender_folds="fold0")
    assert fold0["gender_loss"] != base["gender_loss"]
    assert len(load_gender_cnn(world.stage_dir("stage2"), "fold0").models) == 1 and \
        len(load_gender_cnn(world.stage_dir("stage2")).models) == 2
    drop, _, _ = loss_parts(world, loss_cnn_mode="train")
    assert drop["mse"] != base["mse"] and drop == loss_parts(world, loss_cnn_mode="train")[0]   # seeded dropout
    rec, _, _ = loss_parts(world, reconstruction=True)
    assert {"reconstruction_loss", "kl_loss"} <= set(rec) and rec["total_loss"] > base["total_loss"]
    assert rec["total_loss"] == pytest.approx(base["total_loss"] + rec["reconstruction_loss"]
                                              + 0.05 * rec["kl_loss"], rel=1e-5)


def test_generator_label_policies(world):
    p, y, y_gen = loss_parts(world, gen_labels="shuffled")
    other = [i for i in range(7) if i not in P3_IDX]
    assert torch.equal(y_gen[:, other], y[:, other]) and not torch.equal(y_gen[:, P3_IDX], y[:, P3_IDX])
    _, y, y_box = loss_parts(world, gen_labels="box")
    box = v3_settings(world).box()
    assert ((y_box[:, P3_IDX] >= torch.from_numpy(box[:, 0])) & (y_box[:, P3_IDX] <= torch.from_numpy(box[:, 1]))).all()
    ident, _, _ = loss_parts(world, gen_labels="box", identity_weight=1.0)
    assert "identity_loss" in ident
    with pytest.raises(ValueError, match="label_box"):
        v3_settings(world, label_box="1,0;0,1;0,1").validate()


def test_stage_checkpoints_every_passing_epoch_plus_the_best(world, tmp_path):
    s = v3_settings(world)
    m = run_v3_stage(world, s, tcfg(world, **EASY), out_dir=tmp_path / "easy", female_n=6, show_progress=False)
    out = tmp_path / "easy"
    assert m["passing_epochs"] == [0, 1]
    for e in (0, 1):
        assert (out / "checkpoints" / f"epoch_{e:04d}_gen.pth").is_file()
        assert (out / "checkpoints" / f"epoch_{e:04d}_enc.pth").is_file()
        assert pd.read_csv(out / f"test_z_{e:04d}.csv").shape == (2, 96)
    best = json.loads((out / "best.json").read_text())
    assert best["epoch"] == m["shipped"]["epoch"] and (out / "generator.pth").is_file()
    assert pd.read_csv(out / "test_z_vector.csv").shape == (1, 96)
    log = pd.read_csv(out / "train_log_v3.csv", keep_default_na=False)
    assert list(log.columns) == LOG_COLUMNS
    assert (log["batch_idx"] == "-").sum() == 2                        # one summary row per epoch
    hist = pd.read_csv(out / "generation_test" / "generation_test_history.csv")
    assert sorted(hist["epoch"].unique()) == [0, 1]
    assert m["female_share"]["prior_z"]["n"] == 6 and m["female_share"]["posterior_z"]["n"] == 6
    hard = run_v3_stage(world, s, tcfg(world, **HARD), out_dir=tmp_path / "hard", female_n=6, show_progress=False)
    assert hard["passing_epochs"] == [] and not (tmp_path / "hard" / "checkpoints").exists()
    assert (tmp_path / "hard" / "generator.pth").is_file()              # the best epoch is still shipped
    before = (out / "generator.pth").read_bytes()
    again = run_v3_stage(world, s, tcfg(world, **EASY), out_dir=out, female_n=6, show_progress=False)
    assert again["trained_this_run"] is False and (out / "generator.pth").read_bytes() == before


def test_interrupted_v3_resumes_to_the_uninterrupted_result(world, tmp_path, monkeypatch):
    s = v3_settings(world, epochs=1, max_steps_per_epoch=4, checkpoint_every=2)
    cfg = tcfg(world, n_z=1)
    interrupted_then_resumed(monkeypatch, V3Trainer, lambda out: run_v3_stage(
        world, s, cfg, out_dir=out, female_n=2, show_progress=False), tmp_path / "a", tmp_path / "b",
        ("generator.pth", "encoder.pth"))


def test_test_latent_sources(world, tmp_path):
    prior = run_v3_stage(world, v3_settings(world, epochs=1, max_steps_per_epoch=1, test_z_source="prior"),
                         tcfg(world), out_dir=tmp_path / "prior", female_n=2, show_progress=False)
    assert prior["tests"][0]["z_source"].startswith("seeded N(0, I)")
    last = run_v3_stage(world, v3_settings(world, epochs=1, max_steps_per_epoch=3, test_z_source="last_batches"),
                        tcfg(world), out_dir=tmp_path / "last", female_n=2, show_progress=False)
    assert "last 2 batches" in last["tests"][0]["z_source"]   # n_z 2 from the epoch's last batches


def test_measurement_builds_no_autograd_graph(world):
    s = v3_settings(world)
    m = model_for(world, s)
    g = m.stylegan_generator.train()
    assert any(p.requires_grad for p in g.parameters())
    seen = []

    class Spy:
        name = "spy"

        def measure(self, images):
            seen.append((images.requires_grad, images.grad_fn is None, torch.is_inference_mode_enabled()))
            return {p: images.mean(dim=(1, 2, 3)).numpy() for p in P7}

    w_avg = g.truncation.w_avg.clone()
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        run_generation_test(g, [Spy()], d, GenerationTestSettings(n_z=1, batch_size=25), progress=False)
    assert seen and all(s == (False, True, True) for s in seen)
    assert torch.equal(w_avg, g.truncation.w_avg) and all(p.grad is None for p in g.parameters())


def test_regressed_label_path_replaces_the_latents_own_property_values():
    from stylegan import GeneratorConfig
    from stylegan_modified.loading import regress_label_path
    gcfg = GeneratorConfig(resolution=8, z_dim=16, w_dim=8, mapping_layers=2, mapping_fmaps=32, fmaps_base=64,
                           fmaps_max=8)
    g = build_generator(gcfg, "v3", seed=0)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((400, 16))
    a = rng.standard_normal((7, 16))
    lab = (z @ a.T + 0.1 * rng.standard_normal((400, 7))).astype(np.float32)
    wz = g.mapping.dense0.weight[:, :16].detach().double().clone()
    done = regress_label_path(g, z, lab, ["eyes", "mouth", "pose"], seed=1)
    assert min(done["label_readout_r2"].values()) > 0.98
    w = g.mapping.dense0.weight.detach().double()
    lw = g.mapping.label_weight.detach().double()
    assert torch.count_nonzero(lw[[1, 2, 5, 6]]) == 0                      # only eyes / mouth / pose rows
    b = torch.linalg.lstsq(torch.from_numpy(z - z.mean(0)), torch.from_numpy(lab - lab.mean(0)).double()).solution.T
    zt, lt = torch.from_numpy(z[:5]), torch.from_numpy(lab[:5]).double()
    h = torch.cat([zt, lt @ lw], dim=1) @ w.T                              # the new first layer (stored units)
    # = the start's first layer at a latent whose eyes / mouth / pose read-out is the label and whose other
    #   read-outs are z's own: solve for that latent through the pseudo-inverse of W_z
    z_eff = torch.linalg.lstsq(wz, h.T).solution.T
    ro = z_eff @ b.T
    assert torch.allclose(ro[:, [0, 3, 4]], lt[:, [0, 3, 4]], atol=0.05)
    assert torch.allclose(ro[:, [1, 2, 5, 6]], (zt @ b.T)[:, [1, 2, 5, 6]], atol=0.05)


def test_prior_latent_fraction_option(world):
    base, _, _ = loss_parts(world)
    s = v3_settings(world, prior_z_fraction=1.0)
    m = model_for(world, s)
    x, y = batch()
    eps = torch.randn(4, m.CVAE_encoder.z_dim, generator=torch.Generator().manual_seed(2))
    zp = torch.randn(4, m.CVAE_encoder.z_dim, generator=torch.Generator().manual_seed(3))
    _, parts, *_ = V3Loss(m, s)(x, y, y, eps, 5, zp)
    _, same, *_ = V3Loss(m, s)(x, y, y, eps, 5, torch.full_like(zp, float("nan")))   # all rows: the posterior
    assert float(parts["mse"]) != base["mse"] and float(same["mse"]) == pytest.approx(base["mse"], rel=1e-6)
    with pytest.raises(ValueError, match="prior_z_fraction"):
        v3_settings(world, prior_z_fraction=1.5).validate()


def test_select_judge_parsing_chooses_the_epoch_by_stages_3_and_4(world, tmp_path):
    from pipeline.profiles import Profile
    from segmentation.property_scores import PROPERTIES as P7_PARSING
    prof = Profile({**world, "segmentation": {"checkpoint": "synthface/weights/segmenter.pth"}})
    stats = {"algorithm": "v2", "columns": {f"{p}_score": {"mean": 0.0, "std": 1.0} for p in P7_PARSING}}
    (prof.data_root / "stage4" / "all_scores_v2_norm_stats.json").write_text(json.dumps(stats))
    m = run_v3_stage(prof, v3_settings(prof, select_judge="parsing"), tcfg(prof, **EASY), out_dir=tmp_path / "p",
                     female_n=6, show_progress=False)
    assert all(t["selected_by"] == "parsing" for t in m["tests"])
    for t in m["tests"]:
        j = t["judges"]["parsing"]
        assert t["score"][0] == j["passes"]
        assert t["score"][1] == pytest.approx(np.mean([j[f"{p}_corr_mean"] for p in ("eyes", "mouth", "pose")]))
    assert "parsing" in m["generation_test_best"]["judges"]
    best = max(m["tests"], key=lambda t: tuple(t["score"]))
    assert m["best"]["epoch"] == best["epoch"]
    with pytest.raises(ValueError, match="select_judge"):
        v3_settings(prof, select_judge="evaluator").validate()


def test_train_log_columns_are_the_originals_order():
    """All seven *_mse columns, then all seven *_abs columns (the original's train_log_v3.csv)."""
    props = ["eyes", "hair_color", "hair_length", "mouth", "pose", "back_mean", "back_std"]
    assert LOG_COLUMNS == (["epoch", "batch_idx", "total_loss", "mse", "gender_loss", "mu_loss", "logvar_loss"]
                           + [f"{p}_mse" for p in props] + [f"{p}_abs" for p in props])
