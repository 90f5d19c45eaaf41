"""Stage 7's sample cache: one seeded sampling of (z, label) -> mid vectors at every extraction
point + every fitting judge's scores, shared by all points, methods and n.

With seeded sampling, sample i depends only on (seed, i) (``vectorfind.sampling.draw_latents``),
and an image depends only on (z, label), so the first n samples of one large sampling are exactly
the samples of a run with that n. The cache lives in ``<data root>/stage7/samples/``:

* ``key.json``: what the samples depend on (generator file digest, seed, judges, JPEG, sizes);
  a cache made with another key is refused, naming the key that differs;
* ``chunk_{k:05d}.npz``: samples [k·CHUNK, (k+1)·CHUNK): ``z``, ``label``, ``mid_<point>`` and
  ``score__<judge>__<property>``, written atomically, so an interrupted sampling resumes at
  the first missing chunk.
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np

from pipeline.io import InputError, atomic_write_bytes, atomic_write_json
from vectorfind.protocols import POINTS
from vectorfind.sampling import Samples, draw_latents_range, sample_all_points

CHUNK = 500
KEY = "key.json"


def chunk_path(folder: Path, k: int) -> Path:
    return Path(folder) / f"chunk_{k:05d}.npz"


def check_key(folder: Path, key: dict) -> None:
    path = Path(folder) / KEY
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
        if diff:
            raise InputError(f"{path}: the cached samples were made with other settings ({', '.join(diff)}: "
                             f"{[old.get(k) for k in diff]} vs {[key.get(k) for k in diff]}); "
                             f"remove {folder} or use another data root")
    else:
        atomic_write_json(path, key)


def ensure_samples(folder: Path, key: dict, generator, scorers: dict, n: int, *, seed: int = 0,
                   jpeg: bool = False, batch_size: int = 50, progress: bool = True) -> float:
    """Make sure chunks cover the first n samples; returns the seconds spent sampling now."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    check_key(folder, key)
    spent = 0.0
    n_chunks = -(-int(n) // CHUNK)
    for k in range(n_chunks):
        path = chunk_path(folder, k)
        if path.is_file():
            continue
        t = time.perf_counter()
        z, label = _draw_range(k, generator, seed)
        mids, scores = sample_all_points(generator, scorers, z, label, POINTS, jpeg=jpeg, batch_size=batch_size)
        arrays = {"z": z, "label": label, **{f"mid_{p}": m for p, m in mids.items()},
                  **{f"score__{j}__{p}": v for j, d in scores.items() for p, v in d.items()}}
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())
        spent += time.perf_counter() - t
        if progress:
            print(f"  samples {min((k + 1) * CHUNK, n)}/{n} ({CHUNK / (time.perf_counter() - t):.1f} samples/s)",
                  flush=True)
    return spent


def _draw_range(k: int, generator, seed: int):
    """Latents of chunk k only: sample i of ``draw_latents`` (its own stream), for i in the chunk."""
    return draw_latents_range(k * CHUNK, (k + 1) * CHUNK, generator.z_dim, generator.label_dim, seed)


def load_samples(folder: Path, n: int, point: str, judge: str, seed: int = 0) -> Samples:
    """The first n cached samples at ``point`` with ``judge``'s scores as a :class:`Samples`."""
    folder = Path(folder)
    parts = []
    for k in range(-(-int(n) // CHUNK)):
        path = chunk_path(folder, k)
        if not path.is_file():
            raise InputError(f"{path} missing: the sample cache holds fewer than {n} samples")
        with np.load(path) as f:
            pre = f"score__{judge}__"
            if not any(name.startswith(pre) for name in f.files):
                raise InputError(f"{path} has no scores of judge {judge!r}")
            parts.append({"z": f["z"], "label": f["label"], "mid": f[f"mid_{point}"],
                          "scores": {name[len(pre):]: f[name] for name in f.files if name.startswith(pre)}})
    cat = lambda key: np.concatenate([p[key] for p in parts])[:n]       # noqa: E731
    scores = {k: np.concatenate([p["scores"][k] for p in parts])[:n] for k in parts[0]["scores"]}
    return Samples(point, cat("z"), cat("label"), cat("mid"), scores, 0.0,
                   {"seed": seed, "rng_order": "seeded", "cache": str(folder), "n_requested": n})
