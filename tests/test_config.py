"""pipeline.config: constants, then the profile's preset, then flags; sources printed and recorded."""
import argparse
import json

import pytest

from pipeline.config import ConfigError, add_setting_flags, constants, resolve, write_run_config

CONSTS = {"seed": 0, "lr": 1e-4, "epochs": 3, "use_jpeg": False, "cases": ("eyes", "mouth"), "name": "x"}


def _parse(argv):
    ap = argparse.ArgumentParser()
    add_setting_flags(ap, CONSTS)
    return ap.parse_args(argv)


def test_constants_reads_upper_case_names_only():
    ns = {"SEED": 1, "LR": 0.5, "PROFILE": "synthface", "helper": 3, "_X": 2, "main": print}
    assert constants(ns) == {"seed": 1, "lr": 0.5}


def test_layers_apply_in_order_and_are_reported():
    profile = {"name": "p", "stage9": {"sub": {"lr": 2e-4, "epochs": 5, "note": "why"}}}
    printed = []
    r = resolve(CONSTS, profile, "stage9.sub", _parse(["--epochs", "7", "--use-jpeg"]), print_fn=printed.append)
    assert r.values == {**CONSTS, "lr": 2e-4, "epochs": 7, "use_jpeg": True}
    assert r.sources["lr"] == "profile p:stage9.sub"
    assert r.sources["epochs"] == "flag --epochs"
    assert r.sources["seed"] == "constant"
    text = printed[0]
    assert "lr = 0.0002" in text and "epochs = 7" in text and "seed" not in text


def test_flags_not_given_leave_the_preset():
    r = resolve(CONSTS, {"name": "p", "s": {"seed": 4}}, "s", _parse([]), print_fn=None)
    assert r["seed"] == 4 and r["cases"] == ("eyes", "mouth")
    r = resolve(CONSTS, None, None, _parse(["--cases", "pose,eyes"]), print_fn=None)
    assert r["cases"] == ("pose", "eyes")


def test_unknown_preset_key_and_wrong_type_are_named():
    with pytest.raises(ConfigError, match="unknown setting.*z_dimm"):
        resolve(CONSTS, {"name": "p", "s": {"z_dimm": 3}}, "s", print_fn=None)
    with pytest.raises(ConfigError, match="epochs must be int"):
        resolve(CONSTS, {"name": "p", "s": {"epochs": "3"}}, "s", print_fn=None)
    r = resolve(CONSTS, {"name": "p", "s": {"lr": 1}}, "s", print_fn=None)
    assert isinstance(r["lr"], float)


def test_run_config_records_values_and_sources(tmp_path):
    r = resolve(CONSTS, {"name": "p", "s": {"seed": 4}}, "s", print_fn=None)
    write_run_config(tmp_path / "run_config.json", r, extra={"profile": "p"})
    data = json.loads((tmp_path / "run_config.json").read_text())
    assert data["settings"]["seed"] == 4 and data["sources"]["seed"] == "profile p:s"
    assert data["settings"]["cases"] == ["eyes", "mouth"] and data["profile"] == "p"


def test_shipped_profiles_pass_the_schema():
    from pipeline.profiles import available_profiles, load_profile
    for name in available_profiles():
        assert load_profile(name).name == name


@pytest.mark.parametrize("text,message", [
    ("[1, 2]", "expected a JSON object, got a JSON list"),
    ("{not json", "not valid JSON"),
    ('{"name": "x"}', "missing key 'data_root'"),
])
def test_malformed_profiles_are_named(tmp_path, text, message):
    from pipeline.profiles import ProfileError, load_profile
    p = tmp_path / "x.json"
    p.write_text(text)
    with pytest.raises(ProfileError, match=message):
        load_profile(str(p))


def test_misspelt_and_wrongly_typed_keys_are_named(tmp_path):
    from pipeline.profiles import PROFILE_DIR, ProfileError, load_profile
    data = json.loads((PROFILE_DIR / "synthface.json").read_text())
    data["generator"]["z_dimm"] = data["generator"].pop("z_dim")
    data["resolution"] = "128"
    data["stage9"] = {}
    p = tmp_path / "synthface.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ProfileError) as e:
        load_profile(str(p))
    msg = str(e.value)
    assert "unknown key generator.'z_dimm'" in msg
    assert "'resolution' must be int, got '128'" in msg and "unknown key 'stage9'" in msg


def test_every_flag_and_preset_value_is_range_checked_before_use():
    from pipeline.config import ConfigError, resolve
    consts = {"seed": 0, "batch_size": 8, "threads": 0, "lr": 1e-3, "valid_fraction": 0.1, "max_epochs": 0}
    assert resolve(consts, None, None, {}, print_fn=None)["threads"] == 0          # the constant's 0: default
    for flags, msg in (({"seed": -1}, "flag --seed: seed must be"), ({"batch_size": 0}, "batch_size must be"),
                       ({"threads": 0}, "threads must be a thread count >= 1"), ({"lr": float("nan")}, "finite"),
                       ({"valid_fraction": 1.5}, r"\[0, 1\]"), ({"max_epochs": -1}, "max_epochs must be")):
        with pytest.raises(ConfigError, match=msg):
            resolve(consts, None, None, flags, print_fn=None)
    with pytest.raises(ConfigError, match=r"profile p:s: seed must be"):
        resolve(consts, {"name": "p", "s": {"seed": -3}}, "s", {}, print_fn=None)
