"""Stage 4: property scores of the filtered images from their face-parsing maps.

Inputs (under the profile's data root; all joins by image number, never by position):

* ``stage2/filtered/NNNNNN.png``: the image list (``n`` = the integer file stem); with
  ``v1_image="original"`` also the colour image of the 1st algorithm;
* ``stage3/segmentation_results/parsing_{n:06d}.png`` (single-channel 8-bit S x S class map,
  FaceXFormer ids 0..10) and ``face_{n:06d}.png`` (the S x S colour crop the parser saw); for
  world-backed profiles (``world_seed``) also ``true_mask_{n:06d}.png``, the renderer's exact mask
  in the same crop coordinates, scored as the algorithms' own ceiling;
* world-backed profiles: ``stage1/latents.csv`` (z of every image) for ``WorldMap.truth(z)``.

Every input file is checked before anything is written: it must exist, be a complete PNG (valid
signature, every chunk's CRC, an IEND chunk) of the expected kind and size, and class maps must
hold ids 0..10 only. A missing or corrupt file is a :class:`Stage4InputError` naming it.

Outputs (``stage4/``):

* ``all_scores_v2.csv``: the spec's format (pandas index first, ``img_no, img_path`` and the seven
  ``*_score`` columns, N(0, 1) with ddof 1, 4 decimals) plus ``hairstyle_score`` as the last
  column; ``all_scores.csv``: the same seven columns from the 1st algorithm;
* ``all_scores_v2_raw.csv`` / ``all_scores_raw.csv``: the raw values (full precision) and the
  ``score_flags`` that fired per image (fallbacks and conditions, ``;``-separated);
* ``all_scores_v2_norm_stats.json`` / ``all_scores_norm_stats.json``: mean and std of each column
  (so later images can be put on the same scale with :func:`apply_normalisation`);
* world-backed: ``true_mask_scores_v2_raw.csv`` / ``true_mask_scores_raw.csv``;
* ``metrics.json``, ``report.md``, ``report/*.png``;
* ``cache/raw_<key>/NNNNNN.json``: per-image raw values, keyed by the settings and by the
  SHA-256 of the input files. A re-run (or a resumed, interrupted run) recomputes only images
  whose entry is missing or whose inputs changed, and writes byte-identical CSVs.
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import struct
import sys
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.io import atomic_write_json, atomic_write_text, numbered_pngs, remove_stale_tmp
from pipeline.reports import markdown_table, save_figure, write_metrics, write_report

from . import property_scores as ps

ALGORITHM_VERSION = "stage4-1"          # bump when a change alters any raw value (invalidates caches)
REPORT_VERSION = 2                      # bump when a report figure is drawn differently (redraws them)
SEG_SUBDIR = "segmentation_results"
ALGORITHMS = ("v2", "v1")
CSV_NAMES = {"v2": "all_scores_v2", "v1": "all_scores"}
COLUMNS = {"v2": ps.V2_COLUMNS, "v1": ps.PROPERTIES}
# score -> the world parameter it measures (synthface truth)
TRUTH_COLUMNS = {"eyes": "eyes_open", "mouth": "mouth_open", "pose": "pose", "hair_color": "hair_color",
                 "hair_length": "hair_length", "background_mean": "bg_mean", "background_std": "bg_std",
                 "hairstyle": "hairstyle"}
HAIRSTYLE_TRUTH_THRESHOLD = 0.5         # truth hairstyle in [0, 1]: > 0.5 = curly (the world's midpoint)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Stage4InputError(ValueError):
    """A stage-4 input is missing or corrupt (the message names the file)."""


@dataclass
class Stage4Settings:
    algorithms: tuple = ALGORITHMS           # "v2" (always) and optionally "v1"
    v1_image: str = "face"                   # "face": aligned crop; "original": resized stage-2 image (the quirk)
    hairstyle_left_check: str = "code"       # "code" (original, wraps) or "block" (the documented intent)
    eye_components: str = "all"              # "all" (original) or "largest": drop stray eye-class pixels first
    batch_size: int = 32
    true_masks: bool | None = None           # None: score them when the profile is world-backed
    examples: int = 8                        # example maps in the report

    def validate(self) -> None:
        algos = tuple(self.algorithms)
        if "v2" not in algos or any(a not in ALGORITHMS for a in algos) or len(set(algos)) != len(algos):
            raise ValueError(f"algorithms must include 'v2' and be distinct names out of {ALGORITHMS}, got {algos}")
        if self.v1_image not in ("face", "original"):
            raise ValueError(f"v1_image must be 'face' or 'original', got {self.v1_image!r}")
        if self.hairstyle_left_check not in ("code", "block"):
            raise ValueError(f"hairstyle_left_check must be 'code' or 'block', got {self.hairstyle_left_check!r}")
        if self.eye_components not in ("all", "largest"):
            raise ValueError(f"eye_components must be 'all' or 'largest', got {self.eye_components!r}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


# ------------------------------------------------------------------------------------ normalisation

def normalise(raw: pd.DataFrame, columns) -> tuple[pd.DataFrame, dict]:
    """z-score each column (mean, sample std ddof 1, pandas NaN-skipping), rounded to 4 decimals.

    A column with no spread (std 0 or fewer than two values) scores 0.0 everywhere; its
    statistics record ``std: null`` so the case is visible.
    """
    out, stats = pd.DataFrame(index=raw.index), {}
    for c in columns:
        col = raw[c].astype(np.float64)
        mean, std = col.mean(), col.std()
        ok = bool(np.isfinite(std) and std > 0)
        z = (col - mean) / std if ok else col * 0.0
        out[f"{c}_score"] = z.apply(lambda v: round(v, 4))
        stats[f"{c}_score"] = {"mean": float(mean), "std": float(std) if ok else None}
    return out, stats


def apply_normalisation(raw: pd.DataFrame, stats: dict) -> pd.DataFrame:
    """Put new raw values on a saved scale (``stats`` from ``*_norm_stats.json`` ``columns``)."""
    out = pd.DataFrame(index=raw.index)
    for name, st in stats.items():
        c = name[:-len("_score")]
        col = raw[c].astype(np.float64)
        z = (col - st["mean"]) / st["std"] if st["std"] else col * 0.0
        out[name] = z.apply(lambda v: round(v, 4))
    return out


# ------------------------------------------------------------------------------------ inputs

def check_png(data: bytes, path: Path, kind: str, size: int | None) -> tuple[int, int]:
    """Structural check of a PNG (signature, chunk CRCs, IEND, IHDR kind); returns (width, height)."""
    if len(data) < 8 + 25 + 12 or not data.startswith(PNG_SIGNATURE):
        raise Stage4InputError(f"{kind} file {path} is not a PNG (missing signature or too short)")
    pos, ihdr, end = 8, None, False
    while pos + 12 <= len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        ctype = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if pos + 12 + length > len(data):
            raise Stage4InputError(f"{kind} file {path} is truncated (chunk {ctype!r} at byte {pos} runs past the end)")
        crc = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        if zlib.crc32(ctype + body) & 0xFFFFFFFF != crc:
            raise Stage4InputError(f"{kind} file {path} is corrupt (CRC mismatch in chunk {ctype!r} at byte {pos})")
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBB", body[:10])
        pos += 12 + length
        if ctype == b"IEND":
            end = True
            break
    if ihdr is None or not end:
        missing = "IHDR" if ihdr is None else "IEND"
        raise Stage4InputError(f"{kind} file {path} is truncated or corrupt (no {missing} chunk)")
    w, h, depth, ctype = ihdr
    want_types = (0,) if kind in ("parsing", "true_mask") else (2, 6)
    if depth != 8 or ctype not in want_types:
        what = "single-channel 8-bit" if kind in ("parsing", "true_mask") else "8-bit RGB"
        raise Stage4InputError(f"{kind} file {path} must be a {what} PNG (bit depth {depth}, colour type {ctype})")
    if size is not None and (w, h) != (size, size):
        raise Stage4InputError(f"{kind} file {path} is {w}x{h}; expected {size}x{size} like the other maps")
    return w, h


@dataclass
class ImageInputs:
    img_no: int
    paths: dict           # kind -> Path
    sha: dict             # kind -> sha256 hex


def discover(stage2_dir: Path, stage3_dir: Path, kinds: tuple) -> list[ImageInputs]:
    """The image list (stage-2 filtered folder) and the files of every image; nothing is decoded here."""
    filt = Path(stage2_dir) / "filtered"
    if not filt.is_dir():
        raise Stage4InputError(f"stage-2 folder {filt} not found; run run_cnn.py first (it writes the filtered images)")
    nos = numbered_pngs(filt)
    if not nos:
        raise Stage4InputError(f"{filt} holds no NNNNNN.png image")
    seg = Path(stage3_dir) / SEG_SUBDIR
    if not seg.is_dir():
        raise Stage4InputError(f"stage-3 folder {seg} not found; run run_segmentation.py first")
    out = []
    for n in nos:
        paths = {}
        for k in kinds:
            paths[k] = filt / f"{n:06d}.png" if k == "original" else seg / f"{k}_{n:06d}.png"
        out.append(ImageInputs(n, paths, {}))
    return out


def validate_files(items: list[ImageInputs], show_progress: bool = True) -> int:
    """Read, hash and structurally check every file; returns the map size S (raises on any problem)."""
    size = None
    for it in tqdm(items, desc="stage 4: checking inputs", unit="img", disable=not show_progress):
        for kind, path in it.paths.items():
            if not path.is_file():
                raise Stage4InputError(f"{kind} file {path} is missing (image {it.img_no} is in the stage-2 "
                                       f"filtered folder)")
            data = path.read_bytes()
            w, _ = check_png(data, path, kind, None if kind == "original" else size)
            if kind == "parsing" and size is None:
                size = w
            it.sha[kind] = hashlib.sha256(data).hexdigest()
    return int(size)


def decode(path: Path, kind: str, size: int) -> np.ndarray:
    """Decode one validated input: class map uint8 [S, S] (ids 0..10) or colour uint8 [S, S, 3] (RGB)."""
    data = np.frombuffer(path.read_bytes(), np.uint8)
    if kind in ("parsing", "true_mask"):
        arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if arr is None or arr.ndim != 2 or arr.dtype != np.uint8 or arr.shape != (size, size):
            raise Stage4InputError(f"{kind} file {path} cannot be decoded as a {size}x{size} 8-bit class map")
        if int(arr.max()) > ps.NUM_CLASSES - 1:
            r, c = np.argwhere(arr > ps.NUM_CLASSES - 1)[0]
            raise Stage4InputError(f"{kind} file {path}: class id {int(arr[r, c])} at row {r}, column {c} is "
                                   f"outside 0..{ps.NUM_CLASSES - 1}")
        return arr
    arr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if arr is None:
        raise Stage4InputError(f"{kind} file {path} cannot be decoded")
    arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    if kind == "original":                       # the 1st algorithm's image: whole frame, bilinear (OpenCV)
        return cv2.resize(arr, (size, size), interpolation=cv2.INTER_LINEAR) if arr.shape[:2] != (size, size) else arr
    if arr.shape[:2] != (size, size):
        raise Stage4InputError(f"{kind} file {path} is {arr.shape[1]}x{arr.shape[0]}; expected {size}x{size}")
    return arr


def truth_table(profile, stage1_dir: Path, img_nos: np.ndarray) -> pd.DataFrame | None:
    """World truth of each image (world-backed profiles with a stage-1 latents.csv), indexed by img_no."""
    latents = Path(stage1_dir) / "latents.csv"
    if "world_seed" not in profile or not latents.is_file():
        return None
    from synthface.world import WorldMap
    df = pd.read_csv(latents)
    if "img_no" not in df.columns:
        raise Stage4InputError(f"{latents} has no img_no column")
    df = df.set_index("img_no")
    missing = [int(n) for n in img_nos if int(n) not in df.index]
    if missing:
        raise Stage4InputError(f"{latents} has no row for image {missing[0]} (and {len(missing) - 1} more); "
                               f"stage 1 and stage 2 outputs do not belong together")
    zcols = [c for c in df.columns if c.startswith("z_")]
    z = df.loc[img_nos, zcols].to_numpy(np.float32)
    t = WorldMap(z_dim=len(zcols), seed=int(profile["world_seed"])).truth(z)
    t.index = pd.Index(img_nos, name="img_no")
    return t


# ------------------------------------------------------------------------------------ scoring + cache

def cache_key(settings: Stage4Settings, size: int, kinds: tuple) -> tuple[str, dict]:
    key = {"version": ALGORITHM_VERSION, "size": size, "algorithms": sorted(settings.algorithms),
           "v1_image": settings.v1_image if "v1" in settings.algorithms else None,
           "hairstyle_left_check": settings.hairstyle_left_check, "eye_components": settings.eye_components,
           "kinds": sorted(kinds)}
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return h, key


def _record_part(sb: ps.ScoreBatch, i: int) -> dict:
    return {"values": {k: float(v[i]) for k, v in sb.values.items()}, "flags": sb.fallback_names(i)}


def score_batch(arrays: dict, settings: Stage4Settings) -> dict:
    """Raw values of one batch: {source: {algorithm: ScoreBatch}} for source "parsed" (and "true")."""
    out = {}
    sources = [("parsed", "parsing")] + ([("true", "true_mask")] if "true_mask" in arrays else [])
    for src, kind in sources:
        maps = arrays[kind]
        res = {"v2": ps.scores_v2(maps, arrays["face"], left_check=settings.hairstyle_left_check,
                                  eye_components=settings.eye_components)}
        if "v1" in settings.algorithms:
            res["v1"] = ps.scores_v1(maps, arrays["original"] if settings.v1_image == "original" else arrays["face"])
        out[src] = res
    return out


def _load_cached(path: Path, item: ImageInputs, size: int) -> dict | None:
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        return None                                   # a damaged cache entry is recomputed
    if rec.get("img_no") != item.img_no or rec.get("size") != size or rec.get("sha256") != item.sha:
        return None
    return rec


def compute_all(items: list[ImageInputs], size: int, settings: Stage4Settings, cache_dir: Path,
                show_progress: bool = True) -> tuple[dict, dict]:
    """Raw records of every image (from the cache or computed); returns (records by img_no, timing)."""
    records, todo = {}, []
    for it in items:
        rec = _load_cached(cache_dir / f"{it.img_no:06d}.json", it, size)
        if rec is None:
            todo.append(it)
        else:
            records[it.img_no] = rec
    t_read = t_comp = 0.0
    bs = int(settings.batch_size)
    with tqdm(total=len(todo), desc="stage 4: scoring", unit="img", disable=not show_progress or not todo) as bar:
        for s in range(0, len(todo), bs):
            batch = todo[s:s + bs]
            t0 = time.perf_counter()
            arrays = {k: np.stack([decode(it.paths[k], k, size) for it in batch]) for k in batch[0].paths}
            t1 = time.perf_counter()
            res = score_batch(arrays, settings)
            t2 = time.perf_counter()
            t_read += t1 - t0
            t_comp += t2 - t1
            for i, it in enumerate(batch):
                rec = {"img_no": it.img_no, "size": size, "sha256": it.sha,
                       **{src: {a: _record_part(sb, i) for a, sb in r.items()} for src, r in res.items()}}
                atomic_write_json(cache_dir / f"{it.img_no:06d}.json", rec)
                records[it.img_no] = rec
            bar.update(len(batch))
    n = len(todo)
    timing = {"computed": n, "from_cache": len(items) - n, "read_decode_s": round(t_read, 3),
              "compute_s": round(t_comp, 3),
              "compute_images_per_s": round(n / t_comp, 1) if n and t_comp > 0 else None}
    return records, timing


def raw_frame(records: dict, img_nos, source: str, algo: str) -> pd.DataFrame:
    """img_no, the raw columns of ``algo`` and the ``score_flags`` column, sorted by img_no."""
    rows = []
    for n in img_nos:
        part = records[n][source][algo]
        rows.append({"img_no": int(n), **{c: part["values"][c] for c in COLUMNS[algo]},
                     "score_flags": ";".join(part["flags"])})
    return pd.DataFrame(rows, columns=["img_no", *COLUMNS[algo], "score_flags"])


def flag_counts(raw: pd.DataFrame) -> dict:
    counts = {}
    for f in raw["score_flags"]:
        for name in filter(None, f.split(";")):
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def write_csv(path: Path, df: pd.DataFrame, index: bool = False) -> None:
    """Atomic CSV; floats as Python's shortest round-trip repr."""
    atomic_write_text(path, df.to_csv(index=index, lineterminator="\n"))


# ------------------------------------------------------------------------------------ truth metrics

def truth_metrics(raw: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Pearson and Spearman of each score vs its world parameter; hairstyle AUC at the documented threshold."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score
    t = truth.loc[raw["img_no"].to_numpy()]
    out = {}
    for c in [c for c in raw.columns if c in TRUTH_COLUMNS]:
        x, y = raw[c].to_numpy(np.float64), t[TRUTH_COLUMNS[c]].to_numpy(np.float64)
        ok = np.std(x) > 0 and np.std(y) > 0 and len(x) > 2
        d = {"truth_column": TRUTH_COLUMNS[c], "pearson": float(np.corrcoef(x, y)[0, 1]) if ok else None,
             "spearman": float(spearmanr(x, y)[0]) if ok else None}
        if c == "hairstyle":
            lab = y > HAIRSTYLE_TRUTH_THRESHOLD
            d["auc"] = float(roc_auc_score(lab, x)) if 0 < lab.sum() < len(lab) else None
            d["auc_threshold"] = HAIRSTYLE_TRUTH_THRESHOLD
            d["curly_share"] = float(lab.mean())
        out[c] = d
    return out


# ------------------------------------------------------------------------------------ the stage

def run_stage4(profile, settings: Stage4Settings | None = None, stage1_dir: Path | None = None,
               stage2_dir: Path | None = None, stage3_dir: Path | None = None, out_dir: Path | None = None,
               show_progress: bool = True) -> dict:
    settings = settings or Stage4Settings()
    settings.validate()
    t_start = time.perf_counter()
    stage1_dir = Path(stage1_dir) if stage1_dir else profile.stage_dir("stage1")
    stage2_dir = Path(stage2_dir) if stage2_dir else profile.stage_dir("stage2")
    stage3_dir = Path(stage3_dir) if stage3_dir else profile.stage_dir("stage3")
    out_dir = Path(out_dir) if out_dir else profile.stage_dir("stage4")
    world = "world_seed" in profile
    use_true = world if settings.true_masks is None else bool(settings.true_masks)
    kinds = ("parsing", "face") + (("true_mask",) if use_true else ()) + \
        (("original",) if "v1" in settings.algorithms and settings.v1_image == "original" else ())

    # 1. validate every input before writing anything
    items = discover(stage2_dir, stage3_dir, kinds)
    t0 = time.perf_counter()
    size = validate_files(items, show_progress)
    img_nos = np.array([it.img_no for it in items], dtype=np.int64)
    truth = truth_table(profile, stage1_dir, img_nos) if world else None
    t_validate = time.perf_counter() - t0
    geom = ps.Geometry(size)

    # 2. raw values (cached per image)
    key, key_doc = cache_key(settings, size, kinds)
    cache_dir = out_dir / "cache" / f"raw_{key}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    for d in (out_dir, cache_dir):
        remove_stale_tmp(d)
    if not (cache_dir / "settings.json").is_file():
        atomic_write_json(cache_dir / "settings.json", key_doc)
    records, timing = compute_all(items, size, settings, cache_dir, show_progress)

    # 3. CSVs: raw, normalised, statistics
    data_root = profile.data_root
    paths = [Path(os.path.relpath(it.paths.get("original", stage2_dir / "filtered" / f"{it.img_no:06d}.png"),
                                  data_root)).as_posix() for it in items]
    raws, scores, stats = {}, {}, {}
    for algo in settings.algorithms:
        raw = raw_frame(records, img_nos, "parsed", algo)
        sc, st = normalise(raw, COLUMNS[algo])
        df = pd.concat([pd.DataFrame({"img_no": img_nos, "img_path": paths}), sc], axis=1)
        name = CSV_NAMES[algo]
        write_csv(out_dir / f"{name}_raw.csv", raw)
        atomic_write_json(out_dir / f"{name}_norm_stats.json",
                          {"algorithm": algo, "count": int(len(raw)), "ddof": 1, "decimals": 4,
                           "raw_file": f"{name}_raw.csv", "columns": st})
        write_csv(out_dir / f"{name}.csv", df, index=True)
        raws[algo], scores[algo], stats[algo] = raw, df, st
    true_raws = {}
    if use_true:
        for algo in settings.algorithms:
            true_raws[algo] = raw_frame(records, img_nos, "true", algo)
            write_csv(out_dir / f"true_mask_{CSV_NAMES[algo].replace('all_scores', 'scores')}_raw.csv", true_raws[algo])

    # 4. report, then metrics.json (written last: its presence means the stage finished)
    t_scores = time.perf_counter() - t_start
    m = _metrics(profile, settings, geom, items, raws, scores, stats, true_raws, truth, timing, t_validate,
                 t_scores, key)
    t0 = time.perf_counter()
    _write_report(out_dir, profile, settings, m, raws, scores, items, truth, size)
    m["timings"]["report_s"] = round(time.perf_counter() - t0, 3)
    m["timings"]["total_s"] = round(time.perf_counter() - t_start, 3)
    write_metrics(out_dir, m)
    return m


def _peak_rss_mb() -> float:
    # as pipeline.runtime.peak_rss_mb, without importing torch (stage 4 needs none): Linux reports KiB
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def _corr(df: pd.DataFrame) -> dict:
    c = df.corr()
    return {a: {b: round(float(c.loc[a, b]), 4) for b in c.columns} for a in c.index}


def _metrics(profile, settings, geom, items, raws, scores, stats, true_raws, truth, timing, t_validate, total, key):
    n = len(items)
    v2cols = [f"{c}_score" for c in ps.V2_COLUMNS]
    raw2 = raws["v2"]
    fb = {f"parsed_{a}": flag_counts(r) for a, r in raws.items()}
    fb.update({f"true_mask_{a}": flag_counts(r) for a, r in true_raws.items()})
    m = {
        "stage": "4_property_scores", "profile": profile.name, "map_size": geom.size, "geometry": geom.to_dict(),
        "settings": {**asdict(settings), "algorithms": list(settings.algorithms)},
        "algorithm_version": ALGORITHM_VERSION, "cache": f"cache/raw_{key}",
        "counts": {"images": n, "computed_this_run": timing["computed"], "from_cache": timing["from_cache"]},
        "seeds": {"world_seed": profile.get("world_seed")},
        "timings": {"validate_inputs_s": round(t_validate, 3), **{k: v for k, v in timing.items()
                                                                  if k.endswith("_s")},
                    "scores_and_csvs_s": round(total, 3)},
        "throughput": {
            "compute_images_per_s": timing["compute_images_per_s"],
            "end_to_end_images_per_s": round(timing["computed"] / (timing["read_decode_s"] + timing["compute_s"]), 1)
            if timing["computed"] and timing["read_decode_s"] + timing["compute_s"] > 0 else None,
            "note": "images scored this run (cache hits excluded); compute = the algorithms on the decoded batch "
                    "(v2 + hairstyle" + (" + v1" if "v1" in settings.algorithms else "")
                    + (", on the parsed maps and the true masks" if true_raws else "") + "), one process"},
        "fallbacks": fb,
        "flag_kinds": {k: v[0] for k, v in ps.FLAGS.items()},
        "normalisation": {a: st for a, st in stats.items()},
        "raw_summary": {c: {"min": float(raw2[c].min()), "mean": float(raw2[c].mean()), "max": float(raw2[c].max()),
                            "distinct": int(raw2[c].nunique())} for c in ps.V2_COLUMNS},
        "score_ranges_v2": {c: [float(scores["v2"][c].min()), float(scores["v2"][c].max())] for c in v2cols},
        "mouth_zero_share": float((raw2["mouth"] == 0).mean()),
        "correlation_v2": _corr(scores["v2"][v2cols]),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }
    if "v1" in raws:
        m["v1_vs_v2_pearson"] = {c: round(float(np.corrcoef(raws["v1"][c], raw2[c])[0, 1]), 4)
                                 if raws["v1"][c].std() > 0 and raw2[c].std() > 0 else None for c in ps.PROPERTIES}
    if truth is not None:
        tm = {"parsed": {a: truth_metrics(r, truth) for a, r in raws.items()}}
        if true_raws:
            tm["true_mask"] = {a: truth_metrics(r, truth) for a, r in true_raws.items()}
            tm["parsed_vs_true_mask_pearson"] = {
                c: round(float(np.corrcoef(raw2[c], true_raws["v2"][c])[0, 1]), 4)
                if raw2[c].std() > 0 and true_raws["v2"][c].std() > 0 else None for c in ps.V2_COLUMNS}
        m["truth"] = tm
    return m


# ------------------------------------------------------------------------------------ report

def _histograms_figure(scores: pd.DataFrame, cols, path: Path):
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 4, figsize=(14, 5.6))
    for ax, c in zip(axes.flat, cols):
        ax.hist(scores[c].to_numpy(), bins=50, color="#4c72b0")
        ax.set_title(c, fontsize=9)
    for ax in list(axes.flat)[len(cols):]:
        ax.axis("off")
    fig.suptitle("2nd-algorithm scores, N(0, 1)", fontsize=10)
    return save_figure(fig, path)


def _corr_figure(scores: pd.DataFrame, cols, path: Path):
    import matplotlib.pyplot as plt
    c = scores[cols].corr().to_numpy()
    names = [x[:-len("_score")] for x in cols]
    fig, ax = plt.subplots(figsize=(7.2, 6))
    im = ax.imshow(c, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{c[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if abs(c[i, j]) > 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("Pearson correlation of the scores")
    return save_figure(fig, path)


def _truth_figure(raw: pd.DataFrame, truth: pd.DataFrame, path: Path):
    import matplotlib.pyplot as plt
    t = truth.loc[raw["img_no"].to_numpy()]
    cols = [c for c in ps.V2_COLUMNS if c in TRUTH_COLUMNS]
    fig, axes = plt.subplots(2, 4, figsize=(14, 6))
    for ax, c in zip(axes.flat, cols):
        ax.scatter(t[TRUTH_COLUMNS[c]], raw[c], s=3, alpha=0.4)
        ax.set_xlabel(f"truth {TRUTH_COLUMNS[c]}", fontsize=8)
        ax.set_ylabel(f"raw {c}", fontsize=8)
    fig.suptitle("raw 2nd-algorithm values (parsed maps) against the world truth", fontsize=10)
    return save_figure(fig, path)


def _examples(raws, scores, items, n_examples: int) -> list[int]:
    """Image numbers of the example maps: the lowest and highest eyes, mouth, pose and hairstyle scores."""
    df = scores["v2"]
    picks = []
    for c in ("eyes_score", "mouth_score", "pose_score", "hairstyle_score"):
        order = df.sort_values([c, "img_no"], kind="stable")["img_no"].tolist()
        for n in (order[0], order[-1]):
            if n not in picks:
                picks.append(int(n))
    return picks[:max(0, n_examples)]


def _example_figure(picks, items, scores, size, path: Path):
    from synthface.renderer import colorize_mask
    by_no = {it.img_no: it for it in items}
    df = scores["v2"].set_index("img_no")
    tiles, titles = [], []
    for n in picks:
        it = by_no[n]
        face = decode(it.paths["face"], "face", size)
        vis_path = it.paths["parsing"].with_name(f"parsing_visualization_{n:06d}.png")
        vis = cv2.imread(str(vis_path), cv2.IMREAD_COLOR)
        vis = (cv2.cvtColor(vis, cv2.COLOR_BGR2RGB) if vis is not None and vis.shape[:2] == (size, size)
               else colorize_mask(decode(it.paths["parsing"], "parsing", size)))
        r = df.loc[n]
        tiles.append(np.concatenate([face, vis], axis=1))
        titles.append(f"{n:06d}: eyes {r['eyes_score']:.2f}, mouth {r['mouth_score']:.2f}\n"
                      f"pose {r['pose_score']:.2f}, hairstyle {r['hairstyle_score']:.2f}")
    import matplotlib.pyplot as plt
    ncols = 4
    nrows = int(np.ceil(len(tiles) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.1 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(tiles):
            ax.imshow(tiles[i])
            ax.set_title(titles[i], fontsize=8)
    fig.suptitle("examples: face crop | parsing map (N(0, 1) scores)", fontsize=10)
    return save_figure(fig, path)


class _Figures:
    """Report figures, redrawn only when their data changed (a re-run over the cache reuses them)."""

    def __init__(self, rep: Path, digest: str):
        self.rep, self.digest, self.names = rep, digest, []
        try:
            old = json.loads((rep / "figures.json").read_text())
        except (OSError, json.JSONDecodeError):
            old = {}
        self.reuse = set(old.get("files", [])) if old.get("digest") == digest else set()

    def get(self, name: str, draw) -> Path:
        path = self.rep / name
        self.names.append(name)
        if name in self.reuse and path.is_file():
            return path
        return draw(path)

    def close(self) -> None:
        atomic_write_json(self.rep / "figures.json", {"digest": self.digest, "files": sorted(self.names)})


def _figure_digest(out_dir: Path, truth, picks, settings) -> str:
    h = hashlib.sha256(f"{REPORT_VERSION}".encode())
    for p in sorted(out_dir.glob("*.csv")):
        h.update(p.name.encode() + p.read_bytes())
    if truth is not None:
        h.update(truth.to_csv().encode())
    figure_settings = {k: v for k, v in asdict(settings).items() if k != "batch_size"}
    h.update(json.dumps([picks, figure_settings], default=str).encode())
    return h.hexdigest()


def _write_report(out_dir, profile, settings, m, raws, scores, items, truth, size):
    rep = out_dir / "report"
    picks = _examples(raws, scores, items, settings.examples)
    figs = _Figures(rep, _figure_digest(out_dir, truth, picks, settings))
    v2cols = [f"{c}_score" for c in ps.V2_COLUMNS]
    c = m["counts"]
    secs = [("Summary", markdown_table(["item", "value"], [
        ["images", c["images"]], ["scored this run / from the cache", f"{c['computed_this_run']} / {c['from_cache']}"],
        ["map size", f"{m['map_size']} x {m['map_size']}"], ["algorithms", ", ".join(settings.algorithms)],
        ["1st-algorithm colour image", settings.v1_image if "v1" in settings.algorithms else "-"],
        ["hairstyle left check", settings.hairstyle_left_check],
        ["eye pixels used", "all (original)" if settings.eye_components == "all" else "largest component per eye"],
        ["compute throughput", f"{m['throughput']['compute_images_per_s']} images/s"],
        ["time (inputs, scores, CSVs)", f"{m['timings']['scores_and_csvs_s']:.1f} s"],
        ["inner mouth absent (mouth = 0)", f"{m['mouth_zero_share']:.1%}"],
    ]))]
    hist = figs.get("score_histograms.png", lambda p: _histograms_figure(scores["v2"], v2cols, p))
    secs.append(("Score histograms", f"![histograms](report/{hist.name})"))
    corr = figs.get("score_correlation.png", lambda p: _corr_figure(scores["v2"], v2cols, p))
    secs.append(("Correlation matrix", f"![correlation](report/{corr.name})\n\nThe original's 4,703 real images: "
                 "eyes vs mouth -0.38, hair length vs background std -0.17, hair colour vs background mean +0.14, "
                 "others |r| < 0.08."))
    if "v1_vs_v2_pearson" in m:
        secs.append(("1st vs 2nd algorithm", "Pearson r of the raw values per property (the original measured "
                     "eyes 0.902, hair colour 0.694, hair length 0.960, mouth 0.900, pose 0.689, background mean "
                     "0.975, background std 0.775 on its images):\n\n"
                     + markdown_table(["property", "r (v1, v2)"],
                                      [[p, m["v1_vs_v2_pearson"][p]] for p in ps.PROPERTIES])))
    rows = []
    for src, counts in m["fallbacks"].items():
        for name, k in counts.items():
            kind, text = ps.FLAGS.get(name, ("?", ""))
            rows.append([src, name, kind, k, text])
    secs.append(("Fallbacks and conditions", markdown_table(["scored", "flag", "kind", "images", "meaning"], rows)
                 if rows else "No fallback fired."))
    tm = m.get("truth")
    if tm:
        tr = []
        for col in ps.V2_COLUMNS:
            p = tm["parsed"]["v2"][col]
            t = tm.get("true_mask", {}).get("v2", {}).get(col, {})
            tr.append([col, p["truth_column"], _f(p["pearson"]), _f(t.get("pearson")), _f(p["spearman"]),
                       _f(t.get("spearman")), _f(p.get("auc")), _f(t.get("auc")),
                       _f(tm.get("parsed_vs_true_mask_pearson", {}).get(col))])
        body = (f"2nd algorithm against the world's truth(z) on the {m['counts']['images']} images: on the parsed "
                "maps and on the renderer's exact masks (the algorithm's own ceiling). Hairstyle AUC: truth "
                f"hairstyle > {HAIRSTYLE_TRUTH_THRESHOLD} counts as curly.\n\n"
                + markdown_table(["score", "truth", "r parsed", "r true mask", "rho parsed", "rho true mask",
                                  "AUC parsed", "AUC true mask", "r parsed vs true"], tr))
        if "v1" in tm["parsed"]:
            body += "\n\n1st algorithm, Pearson r (parsed / true mask): " + ", ".join(
                f"{col} {_f(tm['parsed']['v1'][col]['pearson'])} / "
                f"{_f(tm.get('true_mask', {}).get('v1', {}).get(col, {}).get('pearson'))}" for col in ps.PROPERTIES)
        fig = figs.get("truth_scatter.png", lambda p: _truth_figure(raws["v2"], truth, p))
        secs.append(("Against the truth", body + f"\n\n![truth](report/{fig.name})"))
    if picks:
        ex = figs.get("examples.png", lambda p: _example_figure(picks, items, scores, size, p))
        secs.append(("Example maps", "Lowest and highest eyes, mouth, pose and hairstyle scores (N(0, 1) values).\n\n"
                     f"![examples](report/{ex.name})"))
    files = ["- `all_scores_v2.csv`: the 2nd algorithm, N(0, 1), 4 decimals; `hairstyle_score` is the last column",
             "- `all_scores.csv`: the 1st algorithm (same format, seven scores)" if "v1" in settings.algorithms else "",
             "- `*_raw.csv`: raw values and the fallbacks / conditions of each image (`score_flags`)",
             "- `*_norm_stats.json`: the z-score statistics (mean, std with ddof 1) of each column",
             "- `true_mask_*_raw.csv`: the same algorithms on the exact masks" if "true_mask" in (tm or {}) else "",
             f"- `{m['cache']}/`: per-image cache (delete it to recompute everything)"]
    secs.append(("Files", "\n".join(f for f in files if f)))
    figs.close()
    write_report(out_dir, f"Stage 4 — property scores ({profile.name})", secs)


def _f(v, nd=4):
    return "" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))
