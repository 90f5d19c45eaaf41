"""Lineage between stages: what a stage made, what it consumed, and its completion mark.

A stage folder is complete when its ``metrics.json`` exists. The protocol, the same for every stage:

1. ``upstream(dir, name, hint)`` for each input stage: refuses (naming the folder and the command
   that finishes it) an upstream that is incomplete, and returns its record (the digest of its
   outputs). ``verify(dir)`` checks that the upstream's outputs are still the ones it recorded
   (size by default, content with ``deep=True``) and names the first file that changed or went.
2. ``begin(out_dir, records, restart_hint)`` before the stage writes anything: work already in
   ``out_dir`` (finished or interrupted) that was made from other inputs is refused, naming the
   input, instead of being mixed with new work; the completion mark goes, so an interrupted run
   never leaves a ``metrics.json`` that describes an earlier run; the inputs are recorded.
3. ``finish(out_dir, outputs, records)`` writes ``lineage.json`` (every output's size and sha256,
   their digest, and the records consumed); the stage then writes ``metrics.json`` last.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Mapping

from pipeline.io import InputError, atomic_write_json, sha256_file

COMPLETION = "metrics.json"
LINEAGE = "lineage.json"


class LineageError(InputError):
    """An upstream that is incomplete, changed since, or not the one this stage's work was made from."""


def begin(out_dir: str | os.PathLike, consumed: Mapping[str, Mapping] | None = None,
          restart_hint: str = "remove the folder to start again", check: bool = True) -> None:
    """Check earlier work's inputs (unless ``check`` is False), remove the completion mark, record
    the inputs of this run."""
    out_dir = Path(out_dir)
    consumed = dict(consumed or {})
    if check:
        check_consumed(out_dir, consumed, restart_hint)
    mark = out_dir / COMPLETION
    if mark.exists():
        mark.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / LINEAGE, {"state": "running", "consumed": consumed})


def describe_files(root: str | os.PathLike, files: Iterable[str | os.PathLike]) -> dict[str, list]:
    """``{relative path: [size, sha256]}`` of the files, sorted by path."""
    root = Path(root)
    out = {}
    for f in sorted(Path(f) for f in files):
        p = f if f.is_absolute() else root / f
        out[p.relative_to(root).as_posix()] = [p.stat().st_size, sha256_file(p)]
    return out


def digest(described: Mapping[str, list]) -> str:
    h = hashlib.sha256()
    for rel, (size, sha) in sorted(described.items()):
        h.update(f"{rel}\0{size}\0{sha}\n".encode())
    return h.hexdigest()


def finish(out_dir: str | os.PathLike, outputs: Iterable[str | os.PathLike],
           consumed: Mapping[str, Mapping] | None = None) -> dict:
    """Write ``lineage.json``; call it just before the stage writes ``metrics.json``."""
    out_dir = Path(out_dir)
    files = describe_files(out_dir, outputs)
    record = {"state": "finished", "outputs_digest": digest(files), "consumed": dict(consumed or {}),
              "outputs": files}
    atomic_write_json(out_dir / LINEAGE, record)
    return record


def _read(path: Path, finished: bool = True) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LineageError(f"{path}: unreadable lineage record ({exc})") from exc
    if not isinstance(data, dict) or "consumed" not in data:
        raise LineageError(f"{path}: not a lineage record")
    if finished and (data.get("state") != "finished" or "outputs" not in data):
        raise LineageError(f"{path}: the run that wrote it did not finish")
    return data


def upstream(stage_dir: str | os.PathLike, name: str, hint: str) -> dict:
    """The record of a complete upstream stage: ``{"stage": name, "outputs_digest": …}``."""
    stage_dir = Path(stage_dir)
    if not (stage_dir / COMPLETION).is_file():
        raise LineageError(f"{stage_dir} is incomplete (no {COMPLETION}): {name} has not finished; run {hint}")
    if not (stage_dir / LINEAGE).is_file():
        raise LineageError(f"{stage_dir} has no {LINEAGE}: it was made by an older version; run {hint} again")
    data = _read(stage_dir / LINEAGE)
    return {"stage": name, "outputs_digest": data["outputs_digest"]}


def verify(stage_dir: str | os.PathLike, hint: str, deep: bool = False,
           only: Iterable[str] | None = None) -> None:
    """Check an upstream's recorded outputs (all, or the relative paths in ``only``) are unchanged."""
    stage_dir = Path(stage_dir)
    data = _read(stage_dir / LINEAGE)
    files = data["outputs"]
    names = sorted(files) if only is None else list(only)
    for rel in names:
        if rel not in files:
            raise LineageError(f"{stage_dir / rel} is not among the outputs {stage_dir} recorded; run {hint}")
        p = stage_dir / rel
        size, sha = files[rel]
        if not p.is_file():
            raise LineageError(f"{p} is missing since {stage_dir.name} finished; run {hint}")
        if p.stat().st_size != size or (deep and sha256_file(p) != sha):
            raise LineageError(f"{p} changed since {stage_dir.name} finished; run {hint}")


def check_consumed(out_dir: str | os.PathLike, records: Mapping[str, Mapping], restart_hint: str) -> None:
    """Refuse to add to work in ``out_dir`` made from other inputs than ``records``."""
    out_dir = Path(out_dir)
    path = out_dir / LINEAGE
    if not path.is_file():
        return
    old = _read(path, finished=False)["consumed"]
    for name, rec in records.items():
        prev = old.get(name)
        if prev is not None and prev.get("outputs_digest") != rec.get("outputs_digest"):
            raise LineageError(f"{out_dir} was made from another {name} (its outputs changed since); "
                               f"{restart_hint}")


# ------------------------------------------------------------------------------------ one call each

def files_under(out_dir: str | os.PathLike, skip: Iterable[str] = ()) -> list[Path]:
    """Every file under ``out_dir`` (relative paths, sorted) except the lineage record, the completion
    mark, temporary files and the top-level entries named in ``skip`` (e.g. a cache folder)."""
    out_dir = Path(out_dir)
    skip = set(skip) | {LINEAGE, COMPLETION}
    out = []
    for p in sorted(out_dir.rglob("*")):
        rel = p.relative_to(out_dir)
        if p.is_file() and rel.parts[0] not in skip and ".tmp" not in p.name:
            out.append(rel)
    return out


def check_upstreams(upstreams: Mapping[str, tuple] | None = None,
                    files: Mapping[str, str | os.PathLike] | None = None, deep: bool = True) -> dict:
    """The ``consumed`` records of a stage's inputs; writes nothing, raises :class:`LineageError`.

    ``upstreams``: ``{name: (stage folder, command that finishes it)}``; each must be complete and
    unchanged since it finished (``deep``: content hashes), and upstreams must agree with each other
    (stage 4 refuses a stage 3 made from another stage 2 than the one there now).
    ``files``: single input files (hand labels, checkpoints) recorded by content hash."""
    consumed: dict[str, dict] = {}
    recorded: dict[str, tuple] = {}
    for name, (stage_dir, hint) in (upstreams or {}).items():
        consumed[name] = upstream(stage_dir, name, hint)
        verify(stage_dir, hint, deep=deep)
        recorded[name] = (_read(Path(stage_dir) / LINEAGE)["consumed"], stage_dir, hint)
    for name, (their_inputs, stage_dir, hint) in recorded.items():
        for other, rec in their_inputs.items():
            if other in consumed and rec.get("outputs_digest") != consumed[other]["outputs_digest"]:
                raise LineageError(f"{stage_dir} was made from another {other} than the one there now; run {hint}")
    for name, path in (files or {}).items():
        path = Path(path)
        if not path.is_file():
            raise LineageError(f"input file {path} ({name}) not found")
        consumed[name] = {"file": str(path), "outputs_digest": sha256_file(path)}
    return consumed


def open_stage(out_dir: str | os.PathLike, upstreams: Mapping[str, tuple] | None = None,
               files: Mapping[str, str | os.PathLike] | None = None,
               restart_hint: str = "remove the folder to start again",
               refuse_other_inputs: bool = True, deep: bool = True) -> dict:
    """What a stage calls before it writes anything: :func:`check_upstreams`, then :func:`begin`;
    returns the ``consumed`` records for :func:`close_stage`. ``refuse_other_inputs``: work already in
    ``out_dir`` made from other inputs is refused; a stage whose resume is keyed by content hashes
    (it recomputes what changed) passes False. A stage that must check its own settings between the
    two steps (without removing a finished folder's mark for a refused flag) calls them itself."""
    consumed = check_upstreams(upstreams, files, deep)
    begin(out_dir, consumed, restart_hint, check=refuse_other_inputs)
    return consumed


def close_stage(out_dir: str | os.PathLike, consumed: Mapping[str, Mapping] | None, metrics: Mapping,
                skip: Iterable[str] = ()) -> dict:
    """What a stage calls last: record every output (:func:`files_under`) and write ``metrics.json``.
    ``consumed`` None: the records :func:`begin` wrote for this run."""
    out_dir = Path(out_dir)
    if consumed is None:
        consumed = _read(out_dir / LINEAGE, finished=False)["consumed"]
    record = finish(out_dir, files_under(out_dir, skip), consumed)
    atomic_write_json(out_dir / COMPLETION, dict(metrics))
    return record


def finished_from(out_dir: str | os.PathLike, consumed: Mapping[str, Mapping]) -> bool:
    """True when ``out_dir`` is complete and its record says it was made from exactly ``consumed``:
    the skip rule of a stage that re-runs (rather than refuses) when its inputs changed."""
    out_dir = Path(out_dir)
    if not (out_dir / COMPLETION).is_file() or not (out_dir / LINEAGE).is_file():
        return False
    try:
        rec = _read(out_dir / LINEAGE)
    except LineageError:
        return False
    return json.loads(json.dumps(rec["consumed"])) == json.loads(json.dumps(dict(consumed)))


def seal(stage_dir: str | os.PathLike, consumed: Mapping[str, Mapping] | None = None) -> dict:
    """Record a folder made outside the stages (test worlds, imported data) as a finished stage."""
    stage_dir = Path(stage_dir)
    record = finish(stage_dir, files_under(stage_dir), consumed)
    if not (stage_dir / COMPLETION).is_file():
        atomic_write_json(stage_dir / COMPLETION, {"sealed": True})
    return record
