"""Stage-5 script configuration (stages.settings over pipeline.config): the constants hold the values
that ran before from code defaults + the synthface profile, presets override by name, flags last."""
import argparse
import dataclasses

import pytest

import run_property_score_cnn
import run_stylegan_fine_tuning_v1
import run_stylegan_fine_tuning_v3
from cnn.property_score_cnn import PropertyCNNSettings
from pipeline.config import ConfigError, add_setting_flags, constants
from pipeline.profiles import load_profile
from stages.settings import TEST_DEFAULTS, profile_section, resolve_stage, settings_of
from training.cvae import V3Settings
from training.gan import GanSettings


def defaults(cls):
    return {f.name: f.default for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("script, cls, block, fixed", [
    (run_stylegan_fine_tuning_v1, GanSettings, "v1", {"version": "v1"}),
    (run_stylegan_fine_tuning_v1, GanSettings, "v4", {"version": "v4"}),
    (run_stylegan_fine_tuning_v3, V3Settings, "v3", {}),
])
def test_constants_resolve_to_the_settings_that_ran_before(script, cls, block, fixed, capsys):
    prof = load_profile("synthface")
    cfg = resolve_stage(constants(vars(script)), prof, f"stage5.{block}")
    before = cls(**{**profile_section(prof, block, defaults(cls)), **fixed})
    assert settings_of(cls, cfg.settings.values, **fixed) == before
    assert dict(cfg.test.values) == profile_section(prof, "generation_test", dict(TEST_DEFAULTS))
    out = capsys.readouterr().out
    if block == "v4":       # the v4 preset differs from the v1 constants: printed with its source
        assert "batch_size = 8 (constant 16; from profile synthface:stage5.v4)" in out
    else:
        assert out == ""


def test_property_cnn_constants_are_the_synthface_values(capsys):
    prof = load_profile("synthface")
    cfg = resolve_stage(constants(vars(run_property_score_cnn)), prof, "stage5.property_cnn")
    before = profile_section(prof, "property_cnn", defaults(PropertyCNNSettings))
    assert {k: cfg.settings.values[k] for k in before if k != "resolution"} == \
        {k: (tuple(v) if isinstance(v, list) else v) for k, v in before.items() if k != "resolution"}
    assert capsys.readouterr().out == ""


def test_flags_override_the_preset_and_test_flags_reach_the_test_block(capsys):
    prof = load_profile("synthface")
    consts = constants(vars(run_stylegan_fine_tuning_v3))
    ap = argparse.ArgumentParser()
    add_setting_flags(ap, consts)
    args = ap.parse_args(["--epochs", "5", "--test-n-z", "4", "--test-z-source", "prior", "--no-shipped"])
    cfg = resolve_stage(consts, prof, "stage5.v3", args)
    assert cfg.settings["epochs"] == 5 and cfg.settings.sources["epochs"] == "flag --epochs"
    assert cfg.settings["test_z_source"] == "prior"        # a V3Settings field, not a generation-test key
    assert cfg.test["n_z"] == 4 and cfg.runtime["shipped"] is False
    assert "epochs = 5 (constant 3; from flag --epochs)" in capsys.readouterr().out


def test_an_unknown_preset_key_is_an_error():
    prof = load_profile("synthface")
    prof["stage5"]["v3"]["lr_generatr"] = 1.0
    with pytest.raises(ConfigError, match="unknown setting.*lr_generatr"):
        resolve_stage(constants(vars(run_stylegan_fine_tuning_v3)), prof, "stage5.v3")


def test_an_unknown_test_inference_path_is_refused_before_anything_runs():
    prof = load_profile("synthface")
    consts = constants(vars(run_stylegan_fine_tuning_v1))
    assert resolve_stage(consts, prof, "stage5.v1").test.values["inference_path"] == "relaxed"
    ap = argparse.ArgumentParser()
    add_setting_flags(ap, consts)
    with pytest.raises(ConfigError, match="TEST_INFERENCE_PATH must be one of exact, relaxed"):
        resolve_stage(consts, prof, "stage5.v1", ap.parse_args(["--test-inference-path", "fast"]))


def test_the_shipped_v3_run_still_matches_the_constants_test_settings():
    """The v3 run key holds the generation-test settings (its per-epoch tests choose the shipped epoch);
    the test's inference path is not part of it (those tests render on the exact path), so adding
    TEST_INFERENCE_PATH left the shipped FineTune-v3 installable."""
    import json
    from pathlib import Path
    prof = load_profile("synthface")
    cfg = resolve_stage(constants(vars(run_stylegan_fine_tuning_v3)), prof, "stage5.v3")
    shipped = json.loads((Path(prof.path(prof["stage5"]["shipped"])) / "v3" / "shipped.json").read_text())
    from stages.finetune_v3 import key_test_settings
    assert shipped["settings"]["test"] == key_test_settings(dict(cfg.test.values))
    assert cfg.test.values["inference_path"] == "relaxed"
