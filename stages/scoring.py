"""Scoring (stage 4, compute_property_scores_v2.py): property scores of the filtered images from their face-parsing maps.

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
hold ids 0..10 only. A missing or corrupt file is a :class:`ScoringInputError` naming it.

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
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from pipeline import lineage
from pipeline.config import ConfigError, Resolved, resolve, write_run_config
from pipeline.io import atomic_write_json, atomic_write_text, remove_stale_tmp
from pipeline.profiles import load_profile
from segmentation import property_scores as ps
from synthface.truth import truth_for_images

from .scoring_inputs import ImageInputs, ScoringInputError, decode, discover, validate_files
from .scoring_report import HAIRSTYLE_TRUTH_THRESHOLD, TRUTH_COLUMNS, write_stage_report

ALGORITHM_VERSION = "stage4-1"          # bump when a change alters any raw value (invalidates caches)
ALGORITHMS = ("v2", "v1")
CSV_NAMES = {"v2": "all_scores_v2", "v1": "all_scores"}
COLUMNS = {"v2": ps.V2_COLUMNS, "v1": ps.PROPERTIES}
TRUE_MASKS = {"auto": None, "yes": True, "no": False}     # the script's TRUE_MASKS -> ScoringSettings.true_masks

__all__ = ["ScoringInputError", "ScoringSettings", "run_scoring", "apply_normalisation", "main"]


@dataclass
class ScoringRun:
    """What the stage needs of the profile, as plain values (read once at the top)."""
    profile_name: str
    data_root: Path
    world_seed: int | None             # None: no world, no truth


def settings_of(values: dict) -> "ScoringSettings":
    if values["true_masks"] not in TRUE_MASKS:
        raise ConfigError(f"true_masks must be one of {', '.join(TRUE_MASKS)}, got {values['true_masks']!r}")
    return ScoringSettings(algorithms=tuple(values["algorithms"]), v1_image=values["v1_image"],
                           hairstyle_left_check=values["hairstyle_left_check"],
                           eye_components=values["eye_components"], batch_size=int(values["batch_size"]),
                           true_masks=TRUE_MASKS[values["true_masks"]], examples=int(values["examples"]))


def main(consts: dict, profile_name: str, flags, stage1: str | None = None, stage2: str | None = None,
         stage3: str | None = None, out: str | None = None, show_progress: bool = True) -> dict:
    """The script's entry: constants, then the profile's ``stage4`` preset (if any), then flags; then plain values."""
    profile = load_profile(profile_name)
    cfg = resolve(consts, profile, "stage4", flags)
    run = ScoringRun(profile.name, profile.data_root, int(profile["world_seed"]) if "world_seed" in profile else None)
    out_dir = Path(out) if out else profile.stage_dir("stage4")
    m = run_scoring(run, settings_of(cfg.values), stage1_dir=Path(stage1) if stage1 else profile.stage_dir("stage1"),
                    stage2_dir=Path(stage2) if stage2 else profile.stage_dir("stage2"),
                    stage3_dir=Path(stage3) if stage3 else profile.stage_dir("stage3"), out_dir=out_dir,
                    show_progress=show_progress, sources={k: v for k, v in cfg.sources.items() if v != "constant"})
    c = m["counts"]
    print(f"stage 4: {c['images']} images ({c['computed_this_run']} scored, {c['from_cache']} from the cache), "
          f"{m['throughput']['compute_images_per_s']} images/s, {m['timings']['total_s']:.1f} s")
    if m.get("truth"):
        t = m["truth"]
        for src in ("parsed", "true_mask"):
            if src in t:
                v2 = t[src]["v2"]
                parts = [f"{k} {v['pearson']:.3f}" for k, v in v2.items()
                         if k != "hairstyle" and v["pearson"] is not None]
                auc = v2.get("hairstyle", {}).get("auc")
                print(f"vs truth ({src}): r " + ", ".join(parts) + (f"; hairstyle AUC {auc:.3f}" if auc else ""))
    return m


def truth_table(run: ScoringRun, stage1_dir: Path, img_nos: np.ndarray) -> pd.DataFrame | None:
    """World truth of each image (world-backed profiles with a stage-1 latents.csv), indexed by img_no."""
    latents = Path(stage1_dir) / "latents.csv"
    if run.world_seed is None or not latents.is_file():
        return None
    return truth_for_images(latents, img_nos, run.world_seed)


@dataclass
class ScoringSettings:
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
            raise ConfigError(f"algorithms must include 'v2' and be distinct names out of {ALGORITHMS}, got {algos}")
        if self.v1_image not in ("face", "original"):
            raise ConfigError(f"v1_image must be 'face' or 'original', got {self.v1_image!r}")
        if self.hairstyle_left_check not in ("code", "block"):
            raise ConfigError(f"hairstyle_left_check must be 'code' or 'block', got {self.hairstyle_left_check!r}")
        if self.eye_components not in ("all", "largest"):
            raise ConfigError(f"eye_components must be 'all' or 'largest', got {self.eye_components!r}")
        if int(self.batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


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


# ------------------------------------------------------------------------------------ scoring + cache

def cache_key(settings: ScoringSettings, size: int, kinds: tuple) -> tuple[str, dict]:
    key = {"version": ALGORITHM_VERSION, "size": size, "algorithms": sorted(settings.algorithms),
           "v1_image": settings.v1_image if "v1" in settings.algorithms else None,
           "hairstyle_left_check": settings.hairstyle_left_check, "eye_components": settings.eye_components,
           "kinds": sorted(kinds)}
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return h, key


def _record_part(sb: ps.ScoreBatch, i: int) -> dict:
    return {"values": {k: float(v[i]) for k, v in sb.values.items()}, "flags": sb.fallback_names(i)}


def score_batch(arrays: dict, settings: ScoringSettings) -> dict:
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


def compute_all(items: list[ImageInputs], size: int, settings: ScoringSettings, cache_dir: Path,
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

def run_scoring(run: ScoringRun, settings: ScoringSettings, stage1_dir: Path, stage2_dir: Path, stage3_dir: Path,
                out_dir: Path, show_progress: bool = True, sources: dict | None = None) -> dict:
    """Stage 4 on plain settings and paths (see the module docstring)."""
    settings.validate()
    t_start = time.perf_counter()
    stage1_dir, stage2_dir, stage3_dir, out_dir = (Path(p) for p in (stage1_dir, stage2_dir, stage3_dir, out_dir))
    world = run.world_seed is not None
    use_true = world if settings.true_masks is None else bool(settings.true_masks)
    kinds = ("parsing", "face") + (("true_mask",) if use_true else ()) + \
        (("original",) if "v1" in settings.algorithms and settings.v1_image == "original" else ())

    # 1. validate every input before writing anything
    items = discover(stage2_dir, stage3_dir, kinds)
    t0 = time.perf_counter()
    size = validate_files(items, show_progress)
    img_nos = np.array([it.img_no for it in items], dtype=np.int64)
    truth = truth_table(run, stage1_dir, img_nos) if world else None
    # stages 2 and 3 (and 1 for the truth) complete, unchanged, and stage 3 made from this stage 2;
    # the cache is keyed by the input files' hashes, so a new stage 3 is scored again, not refused
    ups = {"stage2": (stage2_dir, "run_cnn.py (stage 2)"), "stage3": (stage3_dir, "run_segmentation.py (stage 3)")}
    if world:
        ups["stage1"] = (stage1_dir, "run_original_generator.py (stage 1)")
    consumed = lineage.open_stage(out_dir, ups, refuse_other_inputs=False)
    t_validate = time.perf_counter() - t0
    geom = ps.Geometry(size)

    # 2. raw values (cached per image)
    key, key_doc = cache_key(settings, size, kinds)
    cache_dir = out_dir / "cache" / f"raw_{key}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    for d in (out_dir, cache_dir):
        remove_stale_tmp(d)
    write_run_config(out_dir / "run_config.json", Resolved(asdict(settings), dict(sources or {})),
                     extra={"profile": run.profile_name})                # the settings of the last run
    if not (cache_dir / "settings.json").is_file():
        atomic_write_json(cache_dir / "settings.json", key_doc)
    records, timing = compute_all(items, size, settings, cache_dir, show_progress)

    # 3. CSVs: raw, normalised, statistics
    data_root = run.data_root
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
    m = _metrics(run, settings, geom, items, raws, scores, stats, true_raws, truth, timing, t_validate,
                 t_scores, key)
    t0 = time.perf_counter()
    write_stage_report(out_dir, run.profile_name, settings, m, raws, scores, items, truth, size)
    m["timings"]["report_s"] = round(time.perf_counter() - t0, 3)
    m["timings"]["total_s"] = round(time.perf_counter() - t_start, 3)
    lineage.close_stage(out_dir, consumed, m, skip=("cache",))     # lineage.json, then metrics.json (last)
    return m


def _peak_rss_mb() -> float:
    # as pipeline.runtime.peak_rss_mb, without importing torch (stage 4 needs none): Linux reports KiB
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def _corr(df: pd.DataFrame) -> dict:
    c = df.corr()
    return {a: {b: round(float(c.loc[a, b]), 4) for b in c.columns} for a in c.index}


def _metrics(run: ScoringRun, settings, geom, items, raws, scores, stats, true_raws, truth, timing, t_validate, total, key):
    n = len(items)
    v2cols = [f"{c}_score" for c in ps.V2_COLUMNS]
    raw2 = raws["v2"]
    fb = {f"parsed_{a}": flag_counts(r) for a, r in raws.items()}
    fb.update({f"true_mask_{a}": flag_counts(r) for a, r in true_raws.items()})
    m = {
        "stage": "4_property_scores", "profile": run.profile_name, "map_size": geom.size, "geometry": geom.to_dict(),
        "settings": {**asdict(settings), "algorithms": list(settings.algorithms)},
        "algorithm_version": ALGORITHM_VERSION, "cache": f"cache/raw_{key}",
        "counts": {"images": n, "computed_this_run": timing["computed"], "from_cache": timing["from_cache"]},
        "seeds": {"world_seed": run.world_seed},
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


