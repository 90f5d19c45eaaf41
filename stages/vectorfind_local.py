"""Stage 7's ``pixel_local`` option (``vectorfind.pixel_local``; not in the original): each SVM group's
eyes and mouth directions replaced by the ones that make the fitted direction's image change inside
their own parser region and none outside it. The metric (1 + dim renders per sample image: forward
differences) is kept per (generator, point, samples) in ``stage7/pixel_local/``, so the 4K / 20K / 80K
rows at one point share it; the directions of a run go to ``<run>/property_score_vectors_pixel_local/``
(the fitted and conditional files stay as they are)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.io import atomic_write_bytes, atomic_write_json
from vectorfind.directions import DirectionSet
from vectorfind.pixel_local import DILATE, STEP, local_direction_set, pixel_metrics

from .vectorfind_samples import ordered_map

FOLDER = "pixel_local"
VECTORS = "property_score_vectors_pixel_local"


def cached_metrics(stage_dir: Path, gen, grec: dict, mids: np.ndarray, point: str, parse, seed: int,
                   progress: bool = True, workers: int = 1) -> dict:
    """``all`` / p -> M_all / M_in,p of the first ``len(mids)`` samples, from ``stage7/pixel_local/`` when made with the same
    generator, point, samples and constants; else computed and kept (atomic)."""
    key = {"generator": grec.get("outputs_digest"), "point": point, "samples": int(len(mids)), "seed": int(seed),
           "step": STEP, "dilate": DILATE, "metrics": "all+inside"}
    folder = Path(stage_dir) / FOLDER
    npz, rec = folder / f"{point}_k{len(mids)}.npz", folder / f"{point}_k{len(mids)}.json"
    if npz.is_file() and rec.is_file() and json.loads(rec.read_text()) == key:
        with np.load(npz) as f:
            return {k: f[k] for k in f.files}
    bar = tqdm(total=len(mids), desc=f"stage 7: pixel-local metric ({point})", unit="image", disable=not progress)
    metrics = pixel_metrics(gen, mids, point, parse, progress=lambda k, n: bar.update(1),
                            map_fn=lambda fn, items: ordered_map(fn, items, workers))
    bar.close()
    buf = io.BytesIO()
    np.savez(buf, **metrics)
    atomic_write_bytes(npz, buf.getvalue())
    atomic_write_json(rec, key)
    return metrics


def localize(out: Path, stage_dir: Path, gen, grec: dict, samples, svm: DirectionSet, cfg: dict, parse,
             progress: bool = True) -> DirectionSet:
    """The run's SVM directions made pixel-local (saved in the original's CSV format)."""
    mids = samples.mid[:int(cfg["pixel_local_samples"])]
    metrics = cached_metrics(stage_dir, gen, grec, mids, svm.point, parse, int(cfg["seed"]), progress,
                             int(cfg.get("workers", 1)))
    local = local_direction_set(svm, metrics, float(cfg["pixel_local_lambda"]))
    local.save(Path(out) / VECTORS)
    return local
