"""Stage 6 (FineTune-v9) end to end on a tiny world: outputs, lineage, resume, re-run, shipped install."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import run_stylegan_finetune_v9 as script
from pipeline import lineage
from pipeline.checkpoint import read_checkpoint, save_checkpoint
from pipeline.config import constants
from pipeline.shipped import full_state, partial_state
from stages import finetune_v9
from stylegan.discriminator import DiscriminatorConfig
from stylegan.generator import GeneratorConfig
from stylegan_modified.conditional import build_discriminator, build_generator
from training.v9 import LOG_COLUMNS, V9Trainer

from tests.stage5_world import RES, make_root


def _world(tmp_path: Path):
    """The stage-5 tiny world plus what stage 6 reads: fold models of all four filter CNNs and a v1 run."""
    from cnn.filter_cnns import FilterCNN
    from cnn.kfold import FoldSettings
    prof = make_root(tmp_path)
    models = prof.data_root / "stage2" / "cnn" / "models"
    with torch.random.fork_rng():
        torch.manual_seed(5)
        for prop in ("quality", "age", "glass"):
            for k in range(2):
                save_checkpoint(FilterCNN(prop, RES, 0.125, 1).state_dict(), models / f"{prop}_model_{k}.pt")
            fs = FoldSettings(prop=prop, lr=1e-3, threshold=0.7, cut=0.5, resolution=RES, width=0.125, padding=1,
                              folds=2)
            (models / f"run_config_{prop}.json").write_text(json.dumps({"settings": fs.to_dict()}))
    gcfg = GeneratorConfig.from_dict(prof["generator"])
    dcfg = DiscriminatorConfig.from_dict(prof["discriminator"])
    v1 = prof.data_root / "stage5" / "v1"
    save_checkpoint(build_generator(gcfg, "v1", seed=1).state_dict(), v1 / "generator.pth")
    save_checkpoint(build_discriminator(dcfg, "v1", seed=2, mbstd_group_size=4).state_dict(), v1 / "discriminator.pth")
    lineage.seal(v1)                                   # a finished FineTune-v1 run, as stage 6 requires
    # random fold models score about 0.5: filter cuts there, so both sides of each concept have samples
    prof["stage2"].update(gender_min=0.5, quality_min=0.5, age_max=0.5, glass_max=0.5)
    prof["stage6"] = {"v9": {"epochs": 1, "max_steps_per_epoch": 3, "checkpoint_every": 2, "grid_z": 2,
                             "monitor_images": 4, "start": "regress", "regress_judged": 40,
                             "regress_samples": 200}}
    return prof


def _run(prof, out=None, **over):
    consts = constants(vars(script))
    consts.update(device="cpu", threads=1, progress=False, quick=False, shipped=True, acceptance_n=12)
    consts.update(over)
    return finetune_v9.main(prof, consts, {}, {"out": out})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    prof = _world(tmp_path_factory.mktemp("s6"))
    m = _run(prof)
    return prof, m


def test_outputs_metrics_and_log(world):
    prof, m = world
    out = prof.data_root / "stage6" / "v9"
    for name in ("generator.pth", "discriminator.pth", "train_log.csv", "concept_log.csv", "train_steps.csv",
                 "acceptance.json", "lineage.json", "run_config.json", "metrics.json", "report.md",
                 "grids/epoch_0000.png", "report/branch.png", "report/samples.png", "checkpoints/epoch_0000_gen.pth"):
        assert (out / name).is_file(), name
    assert m["steps"] == 3
    df = pd.read_csv(out / "train_log.csv", index_col=0)
    assert list(df.columns) == LOG_COLUMNS
    assert list(df["idx"]) == [0, 1, 2]                 # epoch 0: every idx < 10 is a log point
    a = json.loads((out / "acceptance.json").read_text())
    assert a["n"] == 12 and set(a["generators"]) == {"v9", "v1", "base"}
    assert set(a["generators"]["v9"]["cnn_means"]) == {"gender", "quality", "age", "glass"}
    init = m["init"]
    assert init["missing"] == ["mapping.dense_new0.weight", "mapping.dense_new0.bias", "mapping.dense_new1.weight",
                               "mapping.dense_new1.bias"]
    assert "regressed_start" in init and init["branch_original_init"]["norm_ratio_w2_w1"] < 0.01
    lin = json.loads((out / "lineage.json").read_text())
    assert lin["state"] == "finished" and set(lin["consumed"]) == {"stage2", "stage5/v1"}


def test_rerun_only_tests_and_reports(world):
    prof, m = world
    out = prof.data_root / "stage6" / "v9"
    before = read_checkpoint(out / "generator.pth")
    m2 = _run(prof)
    assert not m2["trained_this_run"] and m2["steps"] == m["steps"]
    after = read_checkpoint(out / "generator.pth")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_other_v1_refused_by_lineage(world, tmp_path):
    prof, _ = world
    out = tmp_path / "copy"
    shutil.copytree(prof.data_root / "stage6" / "v9", out)
    v1 = prof.data_root / "stage5" / "v1"
    saved = (v1 / "generator.pth").read_bytes()
    try:
        gcfg = GeneratorConfig.from_dict(prof["generator"])
        save_checkpoint(build_generator(gcfg, "v1", seed=9).state_dict(), v1 / "generator.pth")
        with pytest.raises(Exception, match="generator.pth changed since v1 finished"):
            _run(prof, out=out)                        # an edited upstream file is refused
        lineage.seal(v1)                               # another finished v1 run: its outputs differ
        with pytest.raises(Exception, match="made from another stage5/v1"):
            _run(prof, out=out)
    finally:
        (v1 / "generator.pth").write_bytes(saved)
        lineage.seal(v1)


def test_interrupted_run_resumes_to_the_same_models(world, tmp_path, monkeypatch):
    prof, _ = world
    real = V9Trainer.train_step

    def failing(self, x, y, epoch, step):
        if step == 2:
            raise KeyboardInterrupt
        return real(self, x, y, epoch, step)

    monkeypatch.setattr(V9Trainer, "train_step", failing)
    with pytest.raises(KeyboardInterrupt):
        _run(prof, out=tmp_path / "b")
    assert (tmp_path / "b" / "train_state.pth").is_file() and not (tmp_path / "b" / "metrics.json").exists()
    monkeypatch.setattr(V9Trainer, "train_step", real)
    _run(prof, out=tmp_path / "b")
    a = read_checkpoint(prof.data_root / "stage6" / "v9" / "generator.pth")
    b = read_checkpoint(tmp_path / "b" / "generator.pth")
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5) for k in a)


def test_pack_and_install_shipped_run(world, tmp_path):
    prof, m = world
    prof["stage6"]["shipped"] = str(tmp_path / "shipped")
    try:
        man = finetune_v9.pack_v9_run(prof)
        assert man["models"]["generator.pth"]["quantize_levels"] == 127
        out = tmp_path / "installed"
        m2 = _run(prof, out=out)
        assert m2["installed_from_shipped"] and not m2["trained_this_run"] and m2["steps"] == m["steps"]
        a = read_checkpoint(prof.data_root / "stage6" / "v9" / "generator.pth")
        b = read_checkpoint(out / "generator.pth")
        # quantised deltas: close to the trained model, not bit for bit
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-2 * float(a[k].abs().max()) + 1e-6), k
    finally:
        del prof["stage6"]["shipped"]


def test_quantised_partial_rebuilds_deterministically():
    g = torch.Generator().manual_seed(0)
    base = {"a": torch.randn(64, 32, generator=g), "b": torch.randn(8, generator=g)}
    full = {"a": base["a"] + 0.01 * torch.randn(64, 32, generator=g), "b": base["b"] + 1, "c": torch.ones(3)}
    part = partial_state(full, base, quantize_levels=127)
    assert set(part["deltas"]) == {"a"} and set(part["tensors"]) == {"b", "c"}
    r1, r2 = full_state(part, base, "t"), full_state(part, base, "t")
    assert torch.equal(r1["a"], r2["a"]) and torch.equal(r1["b"], full["b"])
    err = (r1["a"] - full["a"]).abs().max()
    assert err <= (full["a"] - base["a"]).abs().max() / 127 * 0.51 + 1e-7


def tiny_v1():
    """(config, eval-mode v1) of the regressed-start tests: 16 px, w 16."""
    torch.set_num_threads(1)
    cfg = GeneratorConfig(resolution=16, z_dim=16, w_dim=16, mapping_layers=4, mapping_fmaps=32, fmaps_base=64,
                          fmaps_max=16)
    return cfg, build_generator(cfg, "v1", seed=0).eval()


def brightness_rank(imgs):
    """A stand-in judge: the rank of each image's mean within the batch, so half of each batch passes 0.5."""
    m = imgs.reshape(len(imgs), -1).mean(1)
    return np.argsort(np.argsort(m)) / (len(m) - 1)


def test_regressed_start_moves_w_to_the_concept_side():
    from stylegan_modified.conditional import map_to_w
    from stylegan_modified.v9 import build_v9_generator, init_v9_from_v1
    from training.v9_start import regressed_start
    cfg, g1 = tiny_v1()
    g9 = build_v9_generator(cfg, seed=0)
    init_v9_from_v1(g9, g1.state_dict(), seed=0)
    g9.eval()

    def score(imgs):
        return {"bright": brightness_rank(imgs)}

    done = regressed_start(g9, g1, score, {"bright": (">=", 0.5)}, judged=200, samples=2000, margin=1.0, seed=0)
    assert done["concepts"] == ["bright"] and done["fit"]["r2"] > 0.5
    assert done["branch"]["norm_ratio_w2_w1"] > 0.01
    # w moved along the class-mean direction of the judged samples: fresh samples of v9 lie further on it
    rng = np.random.default_rng(3)
    z = rng.normal(size=(300, 16)).astype(np.float32)
    y = rng.normal(size=(300, 7)).astype(np.float32)
    w1, w9 = map_to_w(g1, z, y).numpy(), map_to_w(g9, z, y).numpy()
    from stylegan.generator import postprocess
    from stylegan_modified.conditional import synthesize
    b1 = postprocess(synthesize(g1, z, y)).reshape(300, -1).mean(1)
    b9 = postprocess(synthesize(g9, z, y)).reshape(300, -1).mean(1)
    assert np.abs(w9 - w1).mean() > 0 and b9.mean() > b1.mean()


def test_regressed_start_per_property_margin():
    """``margins`` overrides the margin of one property only: a larger one moves w further; unknown names refused."""
    from stylegan_modified.v9 import build_v9_generator, init_v9_from_v1
    from training.v9_start import regressed_start
    cfg, g1 = tiny_v1()

    def score(imgs):
        r = brightness_rank(imgs)
        return {"bright": r, "dark": 1 - r}

    rules = {"bright": (">=", 0.5), "dark": ("<=", 0.7)}
    shift = {}
    for name, margins in (("same", None), ("bright_more", {"bright": 3.0})):
        g9 = build_v9_generator(cfg, seed=0)
        init_v9_from_v1(g9, g1.state_dict(), seed=0)
        done = regressed_start(g9.eval(), g1, score, rules, judged=200, samples=2000, margin=0.5,
                               margins=margins, seed=0)
        shift[name] = done["mean_shift_norm"]
        assert done["margins_std"] == {"bright": 3.0 if margins else 0.5, "dark": 0.5}
    assert shift["bright_more"] > 1.5 * shift["same"]
    with pytest.raises(ValueError, match="unknown properties"):
        regressed_start(g9, g1, score, rules, judged=20, samples=50, margins={"glasses": 2.0})


def test_regressed_start_widen_spreads_w_off_the_concept_direction():
    """``widen`` > 1: fresh v9 outputs spread more off the concept direction than without it (same start
    otherwise), and the record says so."""
    from stylegan_modified.conditional import map_to_w
    from stylegan_modified.v9 import build_v9_generator, init_v9_from_v1
    from training.v9_start import regressed_start
    cfg, g1 = tiny_v1()

    def score(imgs):
        return {"bright": brightness_rank(imgs)}

    rng = np.random.default_rng(4)
    z = rng.normal(size=(500, 16)).astype(np.float32)
    y = np.zeros((500, 7), np.float32)
    spread = {}
    for f in (1.0, 1.5):
        g9 = build_v9_generator(cfg, seed=0)
        init_v9_from_v1(g9, g1.state_dict(), seed=0)
        done = regressed_start(g9.eval(), g1, score, {"bright": (">=", 0.5)}, judged=200, samples=2000, margin=0.5,
                               seed=0, widen=f)
        assert done["widen"] == f
        spread[f] = map_to_w(g9, z, y).numpy().std(0).sum()
    assert spread[1.5] > 1.2 * spread[1.0]


def test_conditional_directions_separate_among_the_other_concepts_positives():
    """A concept correlated with another: its conditional direction is the class-mean direction among the
    samples passing the other concept, not the plain one; too few samples on a side keep the plain one."""
    from stylegan_modified.v9 import concept_directions
    from training.v9_start import conditional_directions
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4000, 6))
    a = w[:, 0] > 0                                   # concept 0 on axis 0
    b = (w[:, 1] + 1.5 * w[:, 0]) > 0                 # concept 1: axis 1, confounded with axis 0
    pos = np.stack([a, b], 1)
    plain, _ = concept_directions(w, pos)
    dirs, offs, used = conditional_directions(w, pos, [1])
    assert used == {1: int(a.sum())} and np.allclose(dirs[0], plain[0])
    among, _ = concept_directions(w[a], b[a][:, None])
    assert np.allclose(dirs[1], among[0])
    assert abs(dirs[1][1]) > abs(plain[1][1]) and abs(dirs[1][0]) < abs(plain[1][0])   # less of the confound
    dirs2, _, used2 = conditional_directions(w, pos, [1], min_n=10_000)
    assert used2 == {} and np.allclose(dirs2, plain)


def test_run_key_matches_the_shipped_run_and_omits_later_settings_at_their_defaults():
    """The shipped v9 was made at the profile's stage-6 settings, so its key is theirs (a fresh clone installs
    it); the key omits ``regress_margin_glass`` / ``_age``, ``regress_conditional``, ``regress_widen`` and
    ``drop_labels`` at their defaults, so runs made before they existed keep their key; set, they are in it."""
    from dataclasses import replace
    from pipeline.config import constants
    from pipeline.profiles import load_profile
    from stages.finetune_v9 import RUNTIME_KEYS, V9StageSettings, run_key, shipped_folder
    from stages.settings import resolve_stage, settings_of
    prof = load_profile("synthface")
    consts = {k: v for k, v in constants(vars(script)).items() if k not in RUNTIME_KEYS}
    demo = settings_of(V9StageSettings, resolve_stage(consts, prof, "stage6.v9").settings.values)   # as make demo
    shipped = json.loads((shipped_folder(prof) / "shipped.json").read_text())["settings"]
    assert {k: v for k, v in shipped.items() if k not in ("v1", "images", "img_nos_sha256", "epochs")} == run_key(demo)
    s = V9StageSettings(epochs=1, start="regress")
    key = run_key(s)
    assert "regress_margin_glass" not in key
    assert run_key(replace(s, regress_margin_glass=2.0))["regress_margin_glass"] == 2.0
    for k in ("regress_conditional", "drop_labels", "regress_margin_age", "regress_widen"):
        assert k not in key
    on = run_key(replace(s, regress_conditional="glass", drop_labels=True, regress_margin_age=0.5, regress_widen=1.2))
    assert on["regress_conditional"] == "glass" and on["drop_labels"] is True and on["regress_margin_age"] == 0.5
    assert on["regress_widen"] == 1.2
    with pytest.raises(ValueError, match="regress_widen"):
        replace(s, regress_widen=0.0).validate()
    with pytest.raises(ValueError, match="must be >= 0"):
        replace(s, regress_margin_age=-1.0).validate()
    with pytest.raises(ValueError, match="unknown properties"):
        replace(s, regress_conditional="glasses").validate()
