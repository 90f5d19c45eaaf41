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


def resolve(consts: Mapping[str, Any], profile: Mapping[str, Any] | None, block: str | None,
            args: argparse.Namespace | Mapping[str, Any] | None = None, *,
            ignore: tuple[str, ...] = (), print_fn=print) -> Resolved:
    """Constants, then the profile's ``block`` (unknown keys are an error), then given flags.

    ``ignore`` names keys of the block that are read elsewhere (model sizes shared by stages)."""
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
            values[k] = _check_type(k, v, consts[k], f"flag {_flag(k)}")
            sources[k] = f"flag {_flag(k)}"
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
