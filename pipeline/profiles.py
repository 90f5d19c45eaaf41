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
        name = json.loads(path.read_text()).get("name", path.stem) if path.is_file() else path.stem
    else:
        path = PROFILE_DIR / f"{name}.json"
    if not path.is_file():
        raise ProfileError(f"unknown profile {name!r} ({path} not found); available: {', '.join(available_profiles())}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ProfileError(f"profile file {path} is not valid JSON: {exc}") from exc
    if data.get("name") != name:
        raise ProfileError(f"profile file {path} declares name {data.get('name')!r}, expected {name!r}")
    return Profile(data)
