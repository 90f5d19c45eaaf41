"""Checkpoint I/O: strict loading with errors that name the offending keys."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable, Mapping

import torch
import torch.nn as nn

from pipeline.io import atomic_write_bytes


class CheckpointError(RuntimeError):
    """A checkpoint file or state_dict does not match the model it is loaded into."""


def compare_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, list]:
    """Missing, unexpected and mis-shaped keys of ``state`` relative to ``model``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mis_shaped = [(k, tuple(state[k].shape), tuple(own[k].shape))
                  for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    return {"missing": missing, "unexpected": unexpected, "mis_shaped": mis_shaped}


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], what: str = "model",
                           allowed_to_differ: Iterable[str] = ()) -> None:
    """Load ``state`` into ``model``; every key must be present with the right shape.

    ``allowed_to_differ`` names keys that may be missing from ``state`` or differ in
    shape (they keep the model's current values); any other difference raises
    :class:`CheckpointError` naming each key.
    """
    allowed = set(allowed_to_differ)
    diff = compare_state_dict(model, state)
    problems = []
    missing = [k for k in diff["missing"] if k not in allowed]
    unexpected = [k for k in diff["unexpected"] if k not in allowed]
    mis_shaped = [d for d in diff["mis_shaped"] if d[0] not in allowed]
    if missing:
        problems.append("missing keys: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected keys: " + ", ".join(unexpected))
    if mis_shaped:
        problems.append("mis-shaped keys: " + ", ".join(f"{k} (checkpoint {a}, model {b})" for k, a, b in mis_shaped))
    if problems:
        raise CheckpointError(f"{what}: state_dict does not match the model; " + "; ".join(problems))
    bad = [k for k, v in state.items() if torch.is_tensor(v) and not v.is_meta and v.is_floating_point()
           and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{what}: non-finite values (NaN / inf) in key(s) {', '.join(bad[:5])}"
                              + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))
    if allowed:
        own = model.state_dict()
        keep = {k: v for k, v in state.items()
                if k in own and tuple(v.shape) == tuple(own[k].shape)}
        own.update(keep)
        model.load_state_dict(own, strict=True)
    else:
        model.load_state_dict(dict(state), strict=True)


def read_checkpoint(path: str | os.PathLike, missing_hint: str = "") -> dict:
    """``torch.load(path, weights_only=True)`` with clear errors."""
    path = Path(path)
    if not path.is_file():
        msg = f"checkpoint file not found: {path}"
        raise CheckpointError(msg + (f"\n{missing_hint}" if missing_hint else ""))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle with non-tensor objects, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "Weights only load failed" in first or "Unsupported global" in str(exc):
            first = "it holds code or objects other than tensors, which are refused (weights_only load)"
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def select_entry(ckpt: dict, key: str, path: str | os.PathLike) -> dict:
    """Return ``ckpt[key]`` (a state_dict) or raise naming the keys that are there."""
    if key not in ckpt:
        raise CheckpointError(f"checkpoint {path} has no '{key}' entry; it has: {sorted(map(str, ckpt))}")
    return ckpt[key]


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """Atomic ``torch.save`` (temporary file in the same folder, then rename)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())
