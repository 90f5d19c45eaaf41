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

``workers`` > 1 makes that many chunks at once in threads (torch, numpy and OpenCV release the
GIL): with one torch thread each, two workers keep two cores busy at the per-image cost of one
thread, where one worker with two torch threads pays the threads' synchronisation on small
batches (``benchmarks/bench_vectorfind.py``). A sample depends only on (seed, i), so the chunks
are the same whichever worker makes them (at a given torch thread count).
"""
from __future__ import annotations

import io
import itertools
import json
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

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
                   jpeg: bool = False, batch_size: int = 50, progress: bool = True, workers: int = 1) -> float:
    """Make sure chunks cover the first n samples; returns the seconds spent sampling now."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    check_key(folder, key)
    t0 = time.perf_counter()
    missing = [k for k in range(-(-int(n) // CHUNK)) if not chunk_path(folder, k).is_file()]

    def make(k: int) -> float:
        t = time.perf_counter()
        z, label = _draw_range(k, generator, seed)
        mids, scores = sample_all_points(generator, scorers, z, label, POINTS, jpeg=jpeg, batch_size=batch_size)
        arrays = {"z": z, "label": label, **{f"mid_{p}": m for p, m in mids.items()},
                  **{f"score__{j}__{p}": v for j, d in scores.items() for p, v in d.items()}}
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(chunk_path(folder, k), buf.getvalue())
        return time.perf_counter() - t

    for k, sec in zip(missing, ordered_map(make, missing, workers)):
        if progress:
            print(f"  samples {min((k + 1) * CHUNK, n)}/{n} ({CHUNK / sec:.1f} samples/s per worker, {workers} "
                  f"worker{'s' if workers > 1 else ''})", flush=True)
    return time.perf_counter() - t0 if missing else 0.0


def ordered_map(fn, items, workers: int = 1):
    """``fn(item)`` for each item, yielded in the items' order; with ``workers`` > 1 at most that many
    run at once in threads of one torch thread each (the count is restored afterwards), so a consumer
    that stops early wastes at most ``workers`` − 1 calls."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        for x in items:
            yield fn(x)
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)              # the workers share the cores: one torch thread each
    with ThreadPoolExecutor(max_workers=int(workers)) as ex:
        it = iter(items)
        pending = deque(ex.submit(fn, x) for x in itertools.islice(it, workers))
        try:
            while pending:
                res = pending.popleft().result()
                pending.extend(ex.submit(fn, x) for x in itertools.islice(it, 1))   # keep every worker busy
                yield res
        finally:                          # a consumer that stops: calls not started yet never run
            for f in pending:
                f.cancel()
            torch.set_num_threads(threads)


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
