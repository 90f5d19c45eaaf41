"""Configuration in three visible layers: script constants, the profile's preset, flags.

A stage script holds its settings as real values in upper-case constants. The profile's stage
block (e.g. ``stage2`` or ``stage5.v3``) is a named override preset: any of its keys that names
a setting replaces the constant. Flags given on the command line come last. Each value that
differs from the script's constant is printed at start with its source, and the resolved
settings are written to ``run_config.json`` by the stage. Below the top of a stage, code takes
the plain values in ``Resolved.values``, never the profile.

Usage in a script::

    SEED = 0
    LR = 1e-4

    ap = argparse.ArgumentParser(...)
    add_setting_flags(ap, constants(globals()))
    args = ap.parse_args(argv)
    cfg = resolve(constants(globals()), profile, "stage2", args)
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from pipeline.io import atomic_write_text

# keys of a profile block that describe it rather than set anything
DESCRIPTIVE_KEYS = frozenset({"note", "notes", "description"})


class ConfigError(ValueError):
    """A preset or flag that names no setting, or a value of the wrong type."""


def constants(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The upper-case constants of a script's globals, as ``{lower_name: value}`` (PROFILE excluded)."""
    return {k.lower(): v for k, v in namespace.items()
            if k.isupper() and not k.startswith("_") and k != "PROFILE"
            and isinstance(v, (bool, int, float, str, tuple, list, dict))}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_tuple(kind):
    def parse(text: str):
        return tuple(kind(p.strip()) for p in text.split(",") if p.strip())
    return parse


def add_setting_flags(ap: argparse.ArgumentParser, consts: Mapping[str, Any],
                      helps: Mapping[str, str] | None = None, skip: tuple[str, ...] = ()) -> None:
    """One flag per constant (``seed`` -> ``--seed``); a flag not given leaves no trace in ``args``."""
    helps = helps or {}
    for name, value in consts.items():
        if name in skip or isinstance(value, dict):
            continue
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "dest": name,
                              "help": helps.get(name, f"(constant: {value!r})")}
        if isinstance(value, bool):
            kw["action"] = argparse.BooleanOptionalAction
        elif isinstance(value, (tuple, list)):
            kind = type(value[0]) if value else str
            kw["type"] = _parse_tuple(kind)
            kw["metavar"] = "A,B,..."
        else:
            kw["type"] = type(value)
        ap.add_argument(_flag(name), **kw)


@dataclass
class Resolved:
    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)   # name -> "constant" | "profile X:block" | "flag --x"

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def overridden(self) -> list[str]:
        return [n for n, s in self.sources.items() if s != "constant"]

    def describe(self, constants_: Mapping[str, Any]) -> list[str]:
        return [f"  {n} = {self.values[n]!r} (constant {constants_[n]!r}; from {self.sources[n]})"
                for n in self.overridden() if self.values[n] != constants_[n]]

    def to_json(self) -> dict[str, Any]:
        return {"settings": _jsonable(self.values), "sources": dict(self.sources)}


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    return v


def _block(profile: Mapping[str, Any] | None, block: str | None) -> dict[str, Any]:
    if profile is None or not block:
        return {}
    node: Any = profile
    for part in block.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return {}
        node = node[part]
    if not isinstance(node, Mapping):
        raise ConfigError(f"profile {profile.get('name')!r}: block {block!r} is not an object")
    return dict(node)


def _check_type(name: str, value: Any, reference: Any, source: str) -> Any:
    if reference is None or value is None:
        return value
    if isinstance(reference, bool):
        ok = isinstance(value, bool)
    elif isinstance(reference, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(reference, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(reference, (tuple, list)):
        ok = isinstance(value, (tuple, list))
        value = tuple(value) if ok and isinstance(reference, tuple) else value
    else:
        ok = isinstance(value, type(reference))
    if not ok:
        raise ConfigError(f"{source}: {name} must be {type(reference).__name__} "
                          f"(like the constant {reference!r}), got {value!r}")
    return value


# Value checks by setting name, applied to every value a profile preset or a flag gives (the script's
# constants are the developer's; 0 for ``threads`` / ``max_*`` there means "torch's default" / "no cap").
# Name rules: the first matching (exact name, then suffix / prefix) applies; every float must be finite.
_AT_LEAST_1 = (lambda v: v >= 1, "an integer >= 1")
_AT_LEAST_0 = (lambda v: v >= 0, "an integer >= 0 (0: no limit)")
_POSITIVE = (lambda v: v > 0, "a number > 0")
_UNIT = (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
VALUE_CHECKS = {
    "seed": (lambda v: 0 <= v < 2 ** 32, "an integer in 0 … 4294967295"),
    "threads": (lambda v: v >= 1, "a thread count >= 1 (leave the flag out for torch's default)"),
    "folds": (lambda v: v >= 2, "an integer >= 2"),
    "num_images": _AT_LEAST_1, "epochs": _AT_LEAST_1, "patience": _AT_LEAST_1, "t_max": _AT_LEAST_1,
    "max_attempts": _AT_LEAST_1, "examples": _AT_LEAST_0, "trunc_layers": _AT_LEAST_0,
    "trunc_psi": _UNIT, "style_mixing_prob": _UNIT, "weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "gender_min": _UNIT, "quality_min": _UNIT, "age_max": _UNIT, "glass_max": _UNIT, "cut": _UNIT,
    "threshold": (lambda v: v >= 0, "a number >= 0"), "lr": _POSITIVE, "width": _POSITIVE,
    "copies": (lambda v: v >= 0, "an integer >= 0"), "z_index": (lambda v: v >= 0, "a row number >= 0"),
    "noise_scale": (lambda v: v >= 0, "a number >= 0"),
}
SUFFIX_CHECKS = (("batch_size", _AT_LEAST_1), ("_every", _AT_LEAST_1), ("_seed", VALUE_CHECKS["seed"]),
                 ("_fraction", _UNIT), ("_lr", _POSITIVE))
PREFIX_CHECKS = (("max_", _AT_LEAST_0), ("n_", _AT_LEAST_1))


def _rule(name: str):
    if name in VALUE_CHECKS:
        return VALUE_CHECKS[name]
    for suffix, rule in SUFFIX_CHECKS:
        if name.endswith(suffix):
            return rule
    for prefix, rule in PREFIX_CHECKS:
        if name.startswith(prefix):
            return rule
    return None


def check_value(name: str, value: Any, source: str) -> None:
    """Refuse a value out of its setting's range (:data:`VALUE_CHECKS`) or a float that is not finite,
    naming the setting, where it came from and what is expected. Mappings are checked per entry."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            check_value(name, v, f"{source} [{k}]")
        return
    if isinstance(value, (tuple, list)):
        for v in value:
            check_value(name, v, source)
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{source}: {name} must be a finite number, got {value!r}")
    rule = _rule(name)
    if rule is not None and not rule[0](value):
        raise ConfigError(f"{source}: {name} must be {rule[1]}, got {value!r}")


def check_values(values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    """:func:`check_value` for every value whose source is not the script's constant."""
    for name, value in values.items():
        src = sources.get(name, "constant")
        if src != "constant":
            check_value(name, value, src)


def resolve(consts: Mapping[str, Any], profile: Mapping[str, Any] | None, block: str | None,
            args: argparse.Namespace | Mapping[str, Any] | None = None, *,
            ignore: tuple[str, ...] = (), print_fn=print, flag_prefix: str = "") -> Resolved:
    """Constants, then the profile's ``block`` (unknown keys are an error), then given flags.

    ``ignore`` names keys of the block that are read elsewhere (model sizes shared by stages);
    ``flag_prefix`` is the flags' prefix for messages (``test_`` for ``--test-n-z``)."""
    values = dict(consts)
    sources = {n: "constant" for n in values}
    preset = _block(profile, block)
    pname = profile.get("name") if profile is not None else None
    src = f"profile {pname}:{block}"
    unknown = sorted(k for k in preset if k not in values and k not in DESCRIPTIVE_KEYS and k not in ignore)
    if unknown:
        raise ConfigError(f"{src}: unknown setting(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(values))}")
    for k, v in preset.items():
        if k in values:
            if isinstance(values[k], dict) and isinstance(v, Mapping):
                bad = sorted(set(v) - set(values[k]))
                if bad:
                    raise ConfigError(f"{src}: {k} has unknown key(s) {', '.join(bad)}")
                v = {**values[k], **v}
            values[k] = _check_type(k, v, consts[k], src)
            sources[k] = src
    given = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    for k, v in given.items():
        if k in values:
            values[k] = _check_type(k, v, consts[k], f"flag {_flag(flag_prefix + k)}")
            sources[k] = f"flag {_flag(flag_prefix + k)}"
    check_values(values, sources)            # before anything is written (callers write after resolve)
    out = Resolved(values, sources)
    lines = out.describe(consts)
    if print_fn is not None and lines:
        print_fn("settings that differ from the script's constants:\n" + "\n".join(lines))
    return out


def write_run_config(path, resolved: Resolved, extra: Mapping[str, Any] | None = None) -> None:
    """Write the resolved settings (and their sources) atomically as JSON."""
    data = resolved.to_json()
    if extra:
        data.update(_jsonable(dict(extra)))
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
