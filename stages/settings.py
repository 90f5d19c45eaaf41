"""Configuration of the stage-5 scripts: :mod:`pipeline.config`'s three layers, split per purpose.

A stage-5 script's constants are of three kinds, told apart by name:

* ``TEST_<key>`` for the :data:`TEST_KEYS`: the generation test (``TEST_N_Z`` -> ``n_z``); preset:
  the profile's ``stage5.generation_test`` block;
* :data:`RUNTIME` names (device, threads, progress, quick, female count, shipped runs): how this
  process runs, never part of a run's settings key;
* everything else: the stage's settings (a settings dataclass' fields); preset: the profile's
  ``stage5.<block>`` (``stage5.v1``, ``stage5.v3``, ...).

Each layer prints the values that differ from the script's constants with their source;
:func:`write_settings` records the resolved values in the run folder's ``run_config.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping


from evaluation.generation import INFERENCE_PATHS
from pipeline.config import ConfigError, Resolved, check_value, resolve, write_run_config
from pipeline.profiles import load_profile
from pipeline.runtime import apply_threads
from stylegan_modified.distributed import init_distributed, shutdown

RUNTIME = ("device", "threads", "progress", "quick", "female_n", "shipped", "v4")
TEST_PREFIX = "test_"
TEST_KEYS = ("n_z", "z_seed", "batch_size", "round_decimals", "save_images", "inference_path")   # TEST_<key> constants
TEST_DEFAULTS = {"n_z": 30, "z_seed": 0, "batch_size": 50, "round_decimals": 4, "save_images": False,
                 "inference_path": "relaxed"}


@dataclasses.dataclass
class StageConfig:
    settings: Resolved          # the stage's settings
    test: Resolved              # the generation test's settings
    runtime: dict               # RUNTIME values (flags over constants; not in the profile)

    def describe(self) -> dict:
        return {"settings": self.settings.to_json(), "generation_test": self.test.to_json(),
                "runtime": dict(self.runtime)}


def given_flags(args: argparse.Namespace | Mapping | None) -> dict:
    return dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args or {})


def resolve_stage(consts: Mapping[str, Any], profile, block: str, args=None) -> StageConfig:
    """Split the constants (module docstring), resolve each layer and return them."""
    given = given_flags(args)
    test_names = {TEST_PREFIX + k for k in TEST_KEYS}
    test_c = {k[len(TEST_PREFIX):]: v for k, v in consts.items() if k in test_names}
    main_c = {k: v for k, v in consts.items() if k not in test_names and k not in RUNTIME}
    settings = resolve(main_c, profile, block, {k: v for k, v in given.items() if k in main_c})
    test = Resolved({}, {})          # a stage without a generation test (the property CNN)
    if test_c:
        test = resolve(test_c, profile, "stage5.generation_test",
                       {k[len(TEST_PREFIX):]: v for k, v in given.items() if k in test_names}, flag_prefix=TEST_PREFIX)
        path = test.values.get("inference_path", "exact")
        if path not in INFERENCE_PATHS:          # checked before anything runs, not after training
            raise ConfigError(f"TEST_INFERENCE_PATH must be one of {', '.join(INFERENCE_PATHS)}, got {path!r}")
    runtime = {k: given.get(k, consts[k]) for k in RUNTIME if k in consts}
    for k in RUNTIME:
        if k in consts and k in given:
            check_value(k, given[k], f"flag --{k.replace('_', '-')}")
    return StageConfig(settings, test, runtime)


ZERO_MEANS_NONE = ("max_steps_per_epoch",)    # constants where 0 stands for the field's None (no cap)


def settings_of(cls, values: Mapping[str, Any], **fixed):
    """An instance of the settings dataclass ``cls`` from the resolved values (fields not among
    them keep the class default; 0 in :data:`ZERO_MEANS_NONE` is None)."""
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: (None if k in ZERO_MEANS_NONE and v == 0 else v) for k, v in values.items() if k in names}
    return cls(**kw, **fixed)


def profile_of(profile_or_name):
    """A profile from its name (scripts) or as given (tests)."""
    return load_profile(profile_or_name) if isinstance(profile_or_name, str) else profile_or_name


def profile_section(profile, section: str, defaults: dict) -> dict:
    """``defaults`` updated with the profile's ``stage5.<section>`` entries (unknown keys are an error)."""
    block = profile.get("stage5", {}).get(section, {})
    unknown = sorted(k for k in block if k not in defaults and not k.startswith("note"))
    if unknown:
        raise ValueError(f"profile {profile.name!r}: stage5.{section} has unknown key(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(defaults))}")
    return {**defaults, **{k: v for k, v in block.items() if not k.startswith("note")}}


def write_settings(out: Path, cfg: StageConfig, extra: Mapping | None = None) -> None:
    """``run_config.json`` of the run folder: resolved settings, their sources, the test and runtime."""
    Path(out).mkdir(parents=True, exist_ok=True)
    write_run_config(Path(out) / "run_config.json", cfg.settings,
                     {"generation_test": cfg.test.to_json(), "runtime": cfg.runtime, **(extra or {})})


def prepare_runtime(profile, s, test: dict, runtime: Mapping) -> int:
    """Threads, quick mode (shrinks ``s`` and ``test`` in place) and the shipped-run switch; returns
    the number of random outputs for the female share."""
    female_n = int(runtime.get("female_n", 300))
    if runtime.get("quick"):
        s.epochs, s.checkpoint_every, s.max_steps_per_epoch = 1, 2, 4
        test.update(n_z=3)
        female_n = 20
    apply_threads(int(runtime.get("threads", 0)))
    if not runtime.get("shipped", True):
        profile.setdefault("stage5", {})["use_shipped"] = False
    return female_n


@contextmanager
def distributed(runtime: Mapping):
    """The distributed context of this process (torchrun or single), always shut down."""
    ctx = init_distributed(runtime.get("device", "auto"))
    try:
        yield ctx
    finally:
        shutdown(ctx)


def summary_text(title: str, test: dict | None) -> str:
    """The lines a script prints after a generation test."""
    lines = [title]
    for name, summ in (test or {}).get("judges", {}).items():
        lines.append(f"  {name}: {summ['passes']}/{test['n_z']} pass; mean r "
                     + ", ".join(f"{p} {summ['mean'][p + '_corr']:.3f}" for p in ("eyes", "mouth", "pose"))
                     + "; best r " + ", ".join(f"{summ['best'][p + '_corr']:.3f}" for p in ("eyes", "mouth", "pose")))
    return "\n".join(lines)
