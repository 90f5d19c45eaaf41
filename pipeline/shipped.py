"""Shipped runs: a finished training, committed small, that a fresh checkout installs instead of retraining.

A shipped run is a folder (synthface: ``synthface/weights/stage5/<stage>/``, the profile's
``stage5.shipped``) made by packing a finished run folder (:func:`pack_run`):

* ``shipped.json``: the format, the stage, the run's settings key (paths inside the data
  root written relative to it), its training record (everything the stage keeps in its
  resumable state except model and optimiser tensors: history, timings, what the start
  did) and the sha256 of every shipped file;
* ``<name>.partial.pth`` for a model fine-tuned from a committed base: only the tensors that
  differ from the base (FineTune-v1 / v3 train the mapping network, and v1 D's last three
  layers), the full key order and the base file's sha256. :func:`full_state` rebuilds the
  exact float32 state dict, and the stage then loads it strictly;
* every other file verbatim (logs, grids, the CVAE encoder, test latents).

:func:`install_run` writes the full files into an empty run folder when the settings match
and the bases are the committed ones; the stage then treats the run as finished and only
repeats its test and report. Settings or a base that differ mean the shipped run does not
apply: the stage says so and trains. A shipped file whose hash does not match is an error
naming it.

The kept set (``images``, ``img_nos_sha256``) is the one setting allowed to differ: stage 2's
CNNs train with float differences across CPUs, so another machine keeps a few images more or
less. When the image counts differ by at most ``KEPT_SET_TOLERANCE`` (relative to the shipped
count) the run is installed anyway, with a printed note, and the returned record carries
``shipped_install = {"kept_set": "differs", "shipped_images": N, "local_images": M}`` for the
stage's ``metrics.json``; beyond that the stage trains. New packs also store the kept image
numbers (``img_nos``) so the note can say how many images the two sets do not share.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Mapping

import torch

from pipeline.checkpoint import read_checkpoint, save_checkpoint
from pipeline.io import InputError, atomic_write_bytes, atomic_write_json, sha256_file

FORMAT = 1
MANIFEST = "shipped.json"
PARTIAL_SUFFIX = ".partial.pth"
KEPT_SET_KEYS = ("images", "img_nos_sha256")   # settings that name the kept set
KEPT_SET_TOLERANCE = 0.05                      # relative image-count difference still installed


class ShippedRunError(InputError, RuntimeError):
    """A shipped run that is damaged or inconsistent (names the file); a user error: one ``error:``
    line, exit code 2 (``pipeline.entry``), not a traceback."""


def portable_key(key: Mapping, data_root: Path) -> dict:
    """``key`` with string values that are paths inside ``data_root`` made relative to it (posix)."""
    root = Path(data_root).resolve()
    out = {}
    for k, v in key.items():
        if isinstance(v, str) and os.path.isabs(v) and Path(v).resolve().is_relative_to(root):
            v = Path(v).resolve().relative_to(root).as_posix()
        out[k] = v
    return json.loads(json.dumps(out, sort_keys=True, default=str))


def ids_digest(ids) -> str:
    """sha256 of a list of integer ids (e.g. the kept image numbers), order-independent."""
    return hashlib.sha256(",".join(str(int(v)) for v in sorted(int(x) for x in ids)).encode()).hexdigest()


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape) and torch.equal(a, b)
    return type(a) is type(b) and a == b


def partial_state(full: Mapping, base: Mapping) -> dict:
    """The entries of ``full`` that are not exactly the base's, plus ``full``'s key order."""
    changed = OrderedDict((k, v) for k, v in full.items() if k not in base or not _same(v, base[k]))
    return {"format": FORMAT, "keys": list(full), "tensors": changed}


def full_state(partial: Mapping, base: Mapping, what: str) -> OrderedDict:
    """Rebuild the full state dict from a partial checkpoint and its base."""
    if partial.get("format") != FORMAT or "keys" not in partial or "tensors" not in partial:
        raise ShippedRunError(f"{what}: not a partial checkpoint of format {FORMAT}")
    missing = [k for k in partial["keys"] if k not in partial["tensors"] and k not in base]
    if missing:
        raise ShippedRunError(f"{what}: keys neither in the partial checkpoint nor in its base: {', '.join(missing)}")
    return OrderedDict((k, partial["tensors"][k] if k in partial["tensors"] else base[k]) for k in partial["keys"])


def _copies(src: Path, patterns) -> list[str]:
    names = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    return [n for n in names if any(fnmatch.fnmatch(n, pat) for pat in patterns)]


def pack_run(run_dir: Path, dest: Path, stage: str, settings: Mapping, record: Mapping,
             partial_models: Mapping[str, tuple[Mapping, Path]], copy_patterns, img_nos=None) -> dict:
    """Pack the finished ``run_dir`` into ``dest`` (replaced whole). ``partial_models``: file name ->
    (base state dict, base file); ``copy_patterns``: glob patterns of files copied verbatim;
    ``img_nos``: the kept image numbers the run trained on (stored in the manifest)."""
    run_dir, dest = Path(run_dir), Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files, models = {}, {}
    for name, (base, base_path) in partial_models.items():
        part = partial_state(read_checkpoint(run_dir / name), base)
        save_checkpoint(part, tmp / (name + PARTIAL_SUFFIX))
        files[name + PARTIAL_SUFFIX] = sha256_file(tmp / (name + PARTIAL_SUFFIX))
        models[name] = {"base": Path(base_path).name, "base_sha256": sha256_file(base_path),
                        "changed_keys": list(part["tensors"]), "keys": len(part["keys"])}
    for rel in _copies(run_dir, copy_patterns):
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / rel, tmp / rel)
        files[rel] = sha256_file(tmp / rel)
    manifest = {"format": FORMAT, "stage": stage, "settings": dict(settings), "record": dict(record),
                "models": models, "files": files}
    if img_nos is not None:
        manifest["img_nos"] = sorted(int(v) for v in img_nos)
    atomic_write_json(tmp / MANIFEST, manifest)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return manifest


def read_manifest(shipped_dir: Path) -> dict | None:
    p = Path(shipped_dir) / MANIFEST
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ShippedRunError(f"shipped run manifest {p} is not valid JSON: {exc}") from exc


def kept_set_check(manifest: Mapping, settings: Mapping, img_nos=None,
                   tolerance: float = KEPT_SET_TOLERANCE) -> tuple[dict | None, str | None]:
    """``(shipped_install, refusal)`` for the kept-set settings of a shipped run against this run's.

    ``shipped_install`` is the record for ``metrics.json`` (None when the kept sets are the same);
    ``refusal`` says why the run does not apply (None when it does)."""
    old, new = manifest["settings"], settings
    if all(old.get(k) == new.get(k) for k in KEPT_SET_KEYS):
        return None, None
    n_old, n_new = old.get("images"), new.get("images")
    if not isinstance(n_old, int) or not isinstance(n_new, int) or n_old <= 0:
        return None, f"made on another kept set ({', '.join(KEPT_SET_KEYS)}) without image counts to compare"
    rel = abs(n_new - n_old) / n_old
    if rel > tolerance:
        return None, (f"made on a kept set of {n_old} images, this run keeps {n_new} "
                      f"({rel:.1%} apart, more than {tolerance:.0%})")
    info = {"kept_set": "differs", "shipped_images": n_old, "local_images": n_new}
    if manifest.get("img_nos") is not None and img_nos is not None:
        a, b = set(int(v) for v in manifest["img_nos"]), set(int(v) for v in img_nos)
        info.update(only_shipped=len(a - b), only_local=len(b - a))
    return info, None


def install_run(shipped_dir: Path | None, out: Path, settings: Mapping,
                bases: Mapping[str, tuple[Mapping, Path]] | Callable[[], Mapping] = None,
                say: Callable[[str], None] = print, img_nos=None,
                tolerance: float = KEPT_SET_TOLERANCE) -> dict | None:
    """Install the shipped run into ``out`` when it applies; returns its training record, else None.

    ``bases``: file name -> (base state dict, base file) for the partial models (or a callable
    returning that mapping, called only when a shipped run exists). ``img_nos``: this run's kept
    image numbers (for the note when the kept sets differ). When installed on another kept set
    within ``tolerance``, the record holds ``shipped_install`` (see the module docstring)."""
    if shipped_dir is None:
        return None
    shipped_dir, out = Path(shipped_dir), Path(out)
    manifest = read_manifest(shipped_dir)
    if manifest is None:
        return None
    if manifest.get("format") != FORMAT:
        raise ShippedRunError(f"{shipped_dir / MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT}")
    diff = sorted(k for k in set(manifest["settings"]) | set(settings)
                  if k not in KEPT_SET_KEYS and manifest["settings"].get(k) != settings.get(k))
    if diff:
        say(f"shipped run {shipped_dir} was made with other settings ({', '.join(diff)}): training instead")
        return None
    kept_info, refusal = kept_set_check(manifest, settings, img_nos, tolerance)
    if refusal:
        say(f"shipped run {shipped_dir} was {refusal}: training instead")
        return None
    bases = bases() if callable(bases) else (bases or {})
    for name, info in manifest["models"].items():
        if name not in bases:
            raise ShippedRunError(f"{shipped_dir / MANIFEST}: no base given for {name}")
        if sha256_file(bases[name][1]) != info["base_sha256"]:
            say(f"shipped run {shipped_dir}: {name} was fine-tuned from another {info['base']} than "
                f"{bases[name][1]}: training instead")
            return None
    for rel, digest in manifest["files"].items():
        p = shipped_dir / rel
        if not p.is_file():
            raise ShippedRunError(f"shipped run file missing: {p}")
        if sha256_file(p) != digest:
            raise ShippedRunError(f"shipped run file {p} does not match its sha256 in {shipped_dir / MANIFEST}")
    out.mkdir(parents=True, exist_ok=True)
    for name in manifest["models"]:
        part = read_checkpoint(shipped_dir / (name + PARTIAL_SUFFIX))
        save_checkpoint(full_state(part, bases[name][0], str(shipped_dir / (name + PARTIAL_SUFFIX))), out / name)
    for rel in manifest["files"]:
        if rel.endswith(PARTIAL_SUFFIX) and rel[:-len(PARTIAL_SUFFIX)] in manifest["models"]:
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / rel, (shipped_dir / rel).read_bytes())
    atomic_write_json(out / "installed_from_shipped.json",
                      {"shipped": str(shipped_dir), "stage": manifest["stage"], "models": manifest["models"],
                       **({"shipped_install": kept_info} if kept_info else {})})
    if kept_info:
        extra = (f"; {kept_info['only_shipped']} shipped images are not kept here, {kept_info['only_local']} kept "
                 "images here were not in the shipped set" if "only_shipped" in kept_info else "")
        say(f"note: the shipped {manifest['stage']} run was trained on {kept_info['shipped_images']} kept images, "
            f"this machine keeps {kept_info['local_images']} (stage 2 differs slightly across CPUs{extra}); "
            f"installing it anyway (within {tolerance:.0%}; force training with --no-shipped)")
    say(f"installed the shipped {manifest['stage']} run from {shipped_dir}: only the test and the report run")
    record = dict(manifest["record"])
    if kept_info:
        record["shipped_install"] = kept_info
    return record


def shipped_dir(profile, stage: str) -> Path | None:
    """The profile's shipped run folder for ``stage`` (``stage5.shipped``/<stage>), or None (also when
    the profile's ``stage5.use_shipped`` is false: force training)."""
    s5 = profile.get("stage5", {})
    root = s5.get("shipped")
    return None if not root or not s5.get("use_shipped", True) else profile.path(root) / stage


def install_record(out: Path) -> dict:
    """``{"shipped_install": ...}`` when the run in ``out`` was installed from a shipped run made on
    another kept set (read from ``installed_from_shipped.json``, so re-runs keep it), else ``{}``."""
    p = Path(out) / "installed_from_shipped.json"
    if not p.is_file():
        return {}
    info = json.loads(p.read_text()).get("shipped_install")
    return {"shipped_install": info} if info else {}


def run_settings(data_root: Path, key: Mapping, epochs: int, img_nos) -> dict:
    """The settings a shipped fine-tune run must share with this run: the state key with paths inside
    the data root made relative, the epochs (a shipped run cannot be continued) and the kept set."""
    return {**portable_key(key, data_root), "epochs": int(epochs), "img_nos_sha256": ids_digest(img_nos)}
