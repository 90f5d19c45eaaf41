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

With ``quantize_levels`` (FineTune-v9, whose trained synthesis and D blocks would not fit the size
budget in float32) a changed tensor that the base also holds is stored as its difference from the
base, quantised per row to ``levels`` steps (int8) and lzma-compressed; the rebuilt tensor is
``base + q · scale`` in float32, the same on every CPU. The shipped model is then the rebuilt one,
not bit for bit the trained one: pack, then re-install and re-test (``run_pack_shipped.py``).

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
import lzma
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


def _quantise(delta: torch.Tensor, levels: int) -> dict:
    """Per-row symmetric quantisation to ``levels`` steps (int8 up to 127, else int16), lzma-compressed."""
    rows = delta.reshape(delta.shape[0], -1) if delta.ndim > 1 else delta.reshape(1, -1)
    scale = (rows.abs().amax(dim=1) / float(levels)).to(torch.float32)
    q = torch.where(scale[:, None] > 0, torch.round(rows / scale.clamp_min(1e-30)[:, None]), torch.zeros_like(rows))
    dtype = torch.int8 if levels <= 127 else torch.int16
    packed = lzma.compress(q.to(dtype).numpy().tobytes(), preset=9)
    return {"q_lzma": torch.frombuffer(bytearray(packed), dtype=torch.uint8), "scale": scale,
            "shape": list(delta.shape), "bits": 8 if dtype == torch.int8 else 16}


def _dequantise(entry: Mapping, base: torch.Tensor | None) -> torch.Tensor:
    dtype = torch.int8 if int(entry.get("bits", 8)) == 8 else torch.int16
    q = torch.frombuffer(bytearray(lzma.decompress(entry["q_lzma"].numpy().tobytes())), dtype=dtype)
    scale = entry["scale"]
    rows = (q.reshape(len(scale), -1).to(torch.float32) * scale[:, None]).reshape(entry["shape"])
    return rows if base is None else base + rows


NEW_TENSOR_LEVELS = 32767       # tensors the base lacks: their values (not a difference), int16


def partial_state(full: Mapping, base: Mapping, quantize_levels: int | None = None) -> dict:
    """The entries of ``full`` that are not exactly the base's, plus ``full``'s key order; with
    ``quantize_levels`` the changed float tensors go in ``deltas`` (module docstring): those the
    base holds as their difference from it, new ones (e.g. v9's new branch) as their values in int16."""
    changed = OrderedDict((k, v) for k, v in full.items() if k not in base or not _same(v, base[k]))
    out = {"format": FORMAT, "keys": list(full), "tensors": changed}
    if quantize_levels:
        deltas = OrderedDict()
        for k in list(changed):
            v = changed[k]
            if not v.is_floating_point() or v.numel() < 1024:
                continue
            if k in base and v.dtype == base[k].dtype and v.shape == base[k].shape:
                deltas[k] = _quantise(v.to(torch.float32) - base[k].to(torch.float32), int(quantize_levels))
            elif k not in base and v.dtype == torch.float32:
                deltas[k] = {**_quantise(v, NEW_TENSOR_LEVELS), "absolute": True}
            else:
                continue
            del changed[k]
        out.update(deltas=deltas, quantize_levels=int(quantize_levels))
    return out


def full_state(partial: Mapping, base: Mapping, what: str) -> OrderedDict:
    """Rebuild the full state dict from a partial checkpoint and its base."""
    if partial.get("format") != FORMAT or "keys" not in partial or "tensors" not in partial:
        raise ShippedRunError(f"{what}: not a partial checkpoint of format {FORMAT}")
    deltas = partial.get("deltas", {})
    missing = [k for k in partial["keys"] if k not in partial["tensors"] and k not in base
               and not (k in deltas and deltas[k].get("absolute"))]
    if missing:
        raise ShippedRunError(f"{what}: keys neither in the partial checkpoint nor in its base: {', '.join(missing)}")
    return OrderedDict((k, partial["tensors"][k] if k in partial["tensors"] else
                        _dequantise(deltas[k], None if deltas[k].get("absolute") else base[k]) if k in deltas
                        else base[k]) for k in partial["keys"])


def _copies(src: Path, patterns) -> list[str]:
    names = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    return [n for n in names if any(fnmatch.fnmatch(n, pat) for pat in patterns)]


def pack_run(run_dir: Path, dest: Path, stage: str, settings: Mapping, record: Mapping,
             partial_models: Mapping[str, tuple[Mapping, Path]], copy_patterns, img_nos=None,
             quantize_levels: int | None = None) -> dict:
    """Pack the finished ``run_dir`` into ``dest`` (replaced whole). ``partial_models``: file name ->
    (base state dict, base file); ``copy_patterns``: glob patterns of files copied verbatim;
    ``img_nos``: the kept image numbers the run trained on (stored in the manifest)."""
    run_dir, dest = Path(run_dir), Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files, models = {}, {}
    for name, (base, base_path) in partial_models.items():
        part = partial_state(read_checkpoint(run_dir / name), base, quantize_levels)
        save_checkpoint(part, tmp / (name + PARTIAL_SUFFIX))
        files[name + PARTIAL_SUFFIX] = sha256_file(tmp / (name + PARTIAL_SUFFIX))
        models[name] = {"base": Path(base_path).name, "base_sha256": sha256_file(base_path),
                        "changed_keys": list(part["tensors"]) + list(part.get("deltas", {})), "keys": len(part["keys"]),
                        **({"quantize_levels": int(quantize_levels)} if quantize_levels else {})}
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
