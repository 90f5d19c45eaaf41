"""Stage scripts 1-4: constants with real values, every profile's preset names only known settings."""
import pytest

import compute_property_scores_v2
import run_cnn
import run_original_generator
import run_segmentation
from pipeline.config import constants, resolve
from pipeline.profiles import available_profiles, load_profile
from stages.parsing import PARSER_KEYS

SCRIPTS = {run_original_generator: "stage1", run_cnn: "stage2", run_segmentation: "segmentation",
           compute_property_scores_v2: "stage4"}


@pytest.mark.parametrize("script", list(SCRIPTS), ids=lambda m: m.__name__)
def test_constants_are_real_values(script):
    consts = constants(vars(script))
    assert consts and all(v is not None for v in consts.values())
    assert "default_profile" not in consts and script.PROFILE in available_profiles()


@pytest.mark.parametrize("name", available_profiles())
@pytest.mark.parametrize("script", list(SCRIPTS), ids=lambda m: m.__name__)
def test_every_profile_preset_resolves(script, name):
    ignore = PARSER_KEYS if SCRIPTS[script] == "segmentation" else ()
    r = resolve(constants(vars(script)), load_profile(name), SCRIPTS[script], {}, ignore=ignore, print_fn=None)
    assert set(r.values) == set(constants(vars(script)))


def test_synthface_presets_override_the_spec_values():
    r = resolve(constants(vars(run_cnn)), load_profile("synthface"), "stage2", {}, print_fn=None)
    assert (r["age_max"], r["glass_max"], r["max_epochs"]) == (0.02, 0.05, 8)
    assert r.sources["age_max"] == "profile synthface:stage2" and r.sources["weight_decay"] == "constant"
    r = resolve(constants(vars(run_cnn)), load_profile("celeba256"), "stage2", {"age_max": 0.5}, print_fn=None)
    assert r["age_max"] == 0.5 and r["lr"]["gender"] == 5e-6 and r.sources["age_max"] == "flag --age-max"
