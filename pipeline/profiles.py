"""Profiles are data: one JSON file per profile in ``profiles/``.

A profile names the resolution, model sizes, checkpoint paths and stage
settings; every stage script takes ``--profile NAME`` and reads what it needs.
Paths in a profile are relative to the repository root unless absolute.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILE_DIR = REPO_ROOT / "profiles"
DEFAULT_PROFILE = "synthface"


class ProfileError(ValueError):
    pass


# The profile schema: top-level keys and the types of the model blocks. Stage blocks are objects
# whose keys are checked by the stage that reads them (pipeline.config.resolve names unknown keys).
_INT, _FLOAT, _STR, _OBJ = (int,), (int, float), (str,), (dict,)
SCHEMA = {
    "name": (_STR, True), "description": (_STR, False), "data_root": (_STR, True), "resolution": (_INT, True),
    "world_seed": (_INT, False), "generator": (_OBJ, True), "discriminator": (_OBJ, False),
    "generator_checkpoint": (_STR + (type(None),), True), "generator_checkpoint_key": (_STR + (type(None),), False),
    "random_init_seed": (_INT + (type(None),), False), "checkpoint_hint": (_STR, False),
    "stage1": (_OBJ, False), "hand_labels": (_OBJ, False), "stage2": (_OBJ, False), "segmentation": (_OBJ, False),
    "stage4": (_OBJ, False), "stage5": (_OBJ, False), "stage6": (_OBJ, False), "stage7": (_OBJ, False),
}
BLOCK_SCHEMA = {
    "generator": {"resolution": _INT, "z_dim": _INT, "w_dim": _INT, "mapping_layers": _INT, "mapping_fmaps": _INT,
                  "mapping_lr_mul": _FLOAT, "fmaps_base": _INT, "fmaps_max": _INT},
    "discriminator": {"resolution": _INT, "fmaps_base": _INT, "fmaps_max": _INT},
}


def _type_ok(value, kinds) -> bool:
    return isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)


def check_profile(data, path) -> None:
    """Name every unknown key, missing key and wrongly typed value of a profile file."""
    if not isinstance(data, dict):
        raise ProfileError(f"profile file {path}: expected a JSON object, got a JSON {type(data).__name__}")
    problems = []
    for key in data:
        if key not in SCHEMA:
            problems.append(f"unknown key {key!r}")
    for key, (kinds, required) in SCHEMA.items():
        if key not in data:
            if required:
                problems.append(f"missing key {key!r}")
        elif not _type_ok(data[key], kinds):
            problems.append(f"{key!r} must be {' or '.join(k.__name__ for k in kinds)}, got {data[key]!r}")
    for block, fields in BLOCK_SCHEMA.items():
        if not isinstance(data.get(block), dict):
            continue
        for key in data[block]:
            if key not in fields:
                problems.append(f"unknown key {block}.{key!r} (known: {', '.join(fields)})")
        for key, kinds in fields.items():      # a missing key takes the network's default
            if key in data[block] and not _type_ok(data[block][key], kinds):
                problems.append(f"{block}.{key!r} must be {' or '.join(k.__name__ for k in kinds)}, "
                                f"got {data[block][key]!r}")
    if problems:
        raise ProfileError(f"profile file {path}: " + "; ".join(problems))


class Profile(dict):
    """A profile's settings (a dict) plus helpers for its paths."""

    @property
    def name(self) -> str:
        return self["name"]

    @property
    def data_root(self) -> Path:
        override = os.environ.get("OHLORA_DATA_ROOT")
        root = Path(override) / self.name if override else Path(self["data_root"])
        return root if root.is_absolute() else REPO_ROOT / root

    def stage_dir(self, stage: str) -> Path:
        return self.data_root / stage

    def path(self, rel: str | None) -> Path | None:
        if rel is None:
            return None
        p = Path(rel)
        return p if p.is_absolute() else REPO_ROOT / p


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


def load_profile(name: str = DEFAULT_PROFILE) -> Profile:
    """Load ``profiles/<name>.json``; ``name`` may also be the path of a custom profile file."""
    if name.endswith(".json"):
        path = Path(name)
        try:
            head = json.loads(path.read_text()) if path.is_file() else {}
        except json.JSONDecodeError as exc:
            raise ProfileError(f"profile file {path} is not valid JSON: {exc}") from exc
        name = head.get("name", path.stem) if isinstance(head, dict) else path.stem
    else:
        path = PROFILE_DIR / f"{name}.json"
    if not path.is_file():
        raise ProfileError(f"unknown profile {name!r} ({path} not found); available: {', '.join(available_profiles())}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ProfileError(f"profile file {path} is not valid JSON: {exc}") from exc
    check_profile(data, path)
    if data.get("name") != name:
        raise ProfileError(f"profile file {path} declares name {data.get('name')!r}, expected {name!r}")
    return Profile(data)
