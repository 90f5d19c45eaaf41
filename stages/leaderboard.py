"""The direction leaderboard (issue 19), the stage of ``run_direction_leaderboard.py``.

Every method of :mod:`editing` is fitted on one generator (v9 by default), its α scaled so
that its largest edit (α = ±1) moves its property by ``target_stds`` of the property's spread
in truth units (the independent evaluator, on ``n_calibrate`` cases), then edited on the same
``n_cases`` seeded cases: per case and property, ``alpha_steps`` images from α = −1 … +1 of
that property alone. Every judge (the evaluator, the property CNN, stages 3–4 when the data root
has stage 4) reads the images (stages 3–4, slow at 224 px: the first ``parsing_cases`` cases); per
case, r = Pearson(α, score) of the edited property and |r| of the others (leak). ``agreement``:
cases every judge passes and the gap between the judges' pass shares (a method pleasing one judge
only shows).

A case passes for a judge when r_eyes ≥ 0.92, r_mouth ≥ 0.88 and r_pose ≥ 0.88 (the original's
thresholds, vectorfind.cases.PASS_THRESHOLDS, signed: +α must raise the property). Identity
spread = mean pixel distance (32 px) of a case's edits to its unedited image / mean distance
between different cases' unedited images.

Outputs under ``<data root>/leaderboard/`` (or ``--out``): ``methods/<name>/`` (the fitted direction
set ``directions/``, the set as the row edits ``edit_set/`` — α scales saved, ``meta.row.conditional``
—, ``scores.npz``, ``result.json``, ``strip.png``; a method whose ``result.json`` holds the same settings
is not redone, so an interrupted run resumes; other settings redo it), ``leaderboard.csv``,
``report.md`` with a bar chart, ``lineage.json`` (inputs: :mod:`stages.leaderboard_inputs`) and
``metrics.json`` last.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from editing.calibrate import calibrate
from editing.directions import EditDirections
from editing.edit import edit, render
from editing.ganspace import fit_ganspace
from editing.interfacegan import fit_interfacegan
from editing.label import label_directions
from editing.picking import ScoredSample, draw_sample
from editing.sefa import fit_sefa
from editing.stylespace import fit_stylespace
from editing.vectorfind_adapter import case_groups, fit_vectorfind, vectorfind_sample
from pipeline import lineage
from pipeline.config import resolve, write_run_config
from pipeline.io import InputError, atomic_write_json, atomic_write_png
from segmentation.synth_segmenter import parse_crops, whole_frame_crops
from stylegan.generator import postprocess
from vectorfind.cases import PASS_THRESHOLDS
from vectorfind.groups import Medians
from vectorfind.protocols import CONTROLLED
from vectorfind.sampling import draw_latents

from synthface.renderer import render_batch
from synthface.truth import world as world_of

from .leaderboard_inputs import load_models, upstream_records
from .leaderboard_report import acceptance, write_outputs
from .settings import profile_of

OUT_SUBDIR = "leaderboard"
ALL_METHODS = ("vectorfind_svm", "vectorfind_svm_conditional", "vectorfind_gradient", "interfacegan",
               "interfacegan_conditional", "sefa", "ganspace", "stylespace", "v3_label", "oracle")
REFERENCES = ("v3_label", "oracle")
WORLD_COLUMNS = {"eyes": "eyes_open", "mouth": "mouth_open", "pose": "pose"}
CONDITIONAL = {"vectorfind_svm_conditional": "vectorfind_svm", "interfacegan_conditional": "interfacegan"}
LEAK_OTHER = ("hair_color", "hair_length", "background_mean")
# parsing classes (pipeline.vocabulary.CLASS_NAMES ids) of each property's region, for StyleSpace
REGION_CLASSES = {"eyes": (2, 3, 4, 5), "mouth": (7, 8, 9), "pose": (1, 2, 3, 4, 5, 6, 7, 8, 9)}
CASE_STREAM, CALIBRATION_STREAM = 9301, 9302
EDIT_SET = "edit_set"        # methods/<row>/edit_set: the calibrated set (directions/ holds the fit, scale 1)


@dataclass
class BoardSettings:
    methods: tuple = ALL_METHODS
    n_cases: int = 100
    n_calibrate: int = 8
    n_fit: int = 1000
    n_pick: int = 64
    n_pca: int = 2000
    alpha_steps: int = 5
    target_stds: float = 1.5
    vf_point: str = "w"
    gradient_max_epochs: int = 1000
    fit_judge: str = "evaluator"
    sefa_layers: tuple = (0, 4)
    seed: int = 0
    batch_size: int = 50
    generator_checkpoint: str = "stage6/v9/generator.pth"   # inside the data root, a path, or "shipped-v1"
    parsing_cases: int = 20      # cases the stages 3-4 judge reads (0: all); it parses at 224 px, ~8 images/s


# ----------------------------------------------------------------------------- judges

def measure(judge, images) -> dict:
    return {k: np.asarray(v, np.float64) for k, v in judge.measure(images).items()}


def judge_all(models: dict, s: BoardSettings, images, n: int, k: int, prop: str, scores: dict) -> None:
    """Every judge's reading of one property's edits (``images`` case-major: n cases x k α) into
    ``scores["judge|prop|q"]`` [cases, k]; the stages 3-4 judge reads the first ``parsing_cases``."""
    for jn, judge in models["judges"].items():
        m_cases = min(n, s.parsing_cases) if jn == "parsing" and s.parsing_cases else n
        m = measure(judge, images[:m_cases * k])
        for q in CONTROLLED + LEAK_OTHER:
            if q in m:
                scores[f"{jn}|{prop}|{q}"] = m[q].reshape(m_cases, k)


def fit_scorer(models: dict, s: BoardSettings):
    """Scores the methods are fitted on: the fit judge, missing properties from the evaluator."""
    main, ev = models["judges"][s.fit_judge], models["judges"]["evaluator"]

    def score(images):
        out = measure(main, images)
        if main is not ev:
            out = {**measure(ev, images), **out}
        return out
    return score


def parser_regions(segmenter):
    """images -> {property: bool [N, R, R]} from the profile's parser (classes of REGION_CLASSES)."""
    def regions(images):
        res = images.shape[-1]
        maps = parse_crops(segmenter, whole_frame_crops(postprocess(images)))
        maps = F.interpolate(torch.from_numpy(maps).unsqueeze(1).float(), size=(res, res), mode="nearest")
        maps = maps.squeeze(1).to(torch.uint8).numpy()
        return {p: np.isin(maps, cls) for p, cls in REGION_CLASSES.items()}
    return regions


# ----------------------------------------------------------------------------- fitting

def fit_method(name: str, models: dict, s: BoardSettings, sample: ScoredSample, scorer, out: Path,
               cache: dict | None = None) -> EditDirections:
    """The method's direction set (saved under out/directions; reused when present). ``cache`` keeps
    vectorfind's sample between its two options (drawn once: same seed, generator and judge)."""
    folder = out / "methods" / name / "directions"
    if (folder / "directions.json").is_file():
        return EditDirections.load(folder)
    g = models["g9"]
    pick = ScoredSample(sample.z[:s.n_pick], sample.label[:s.n_pick], sample.w[:s.n_pick],
                        {k: v[:s.n_pick] for k, v in sample.scores.items()},
                        sample.seconds * min(s.n_pick, len(sample)) / len(sample), dict(sample.meta))
    if name == "interfacegan":
        ds = fit_interfacegan(g, sample=sample, seed=s.seed)
    elif name == "sefa":
        ds = fit_sefa(g, sample=pick, layers=tuple(s.sefa_layers), seed=s.seed)
    elif name == "ganspace":
        ds = fit_ganspace(g, sample=pick, n_pca=s.n_pca, seed=s.seed)
    elif name == "stylespace":
        if models["segmenter"] is None:
            raise InputError("StyleSpace needs the profile's parser (segmentation.checkpoint)")
        ds = fit_stylespace(g, scorer, parser_regions(models["segmenter"]), sample=pick, seed=s.seed)
    elif name in ("vectorfind_svm", "vectorfind_gradient"):
        cache = {} if cache is None else cache
        if "vf_sample" not in cache:
            cache["vf_sample"] = vectorfind_sample(g, scorer, point=s.vf_point, n=s.n_fit, seed=s.seed)
        ds = fit_vectorfind(name.split("_", 1)[1], g, scorer, point=s.vf_point, n=s.n_fit, seed=s.seed,
                            drawn=cache["vf_sample"],
                            gradient_kw={"max_epochs": s.gradient_max_epochs})
    elif name == "v3_label":
        ds = label_directions(models["g3"].spec.label_names)
    else:
        raise InputError(f"unknown method {name!r}; expected one of {ALL_METHODS}")
    ds.save(folder)
    return ds


def groups_for(ds: EditDirections, g, z, label, scorer):
    """The 16-group name per case for group-wise sets (read from the unedited image), else None."""
    if ds.groups == ("all",):
        return None
    return case_groups(scorer(render(g, z, label)), Medians(**ds.meta["medians"]))


# ----------------------------------------------------------------------------- scoring

def slope_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of each row of y [n, k] on x [k]."""
    xc = x - x.mean()
    return (y - y.mean(axis=1, keepdims=True)) @ xc / (xc ** 2).sum()


def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """r of x [k] with each row of y [n, k] (NaN for a constant row)."""
    xc = x - x.mean()
    yc = y - y.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (yc @ xc) / np.sqrt((yc ** 2).sum(axis=1) * (xc ** 2).sum())


def score_method(name: str, ds: EditDirections, g, models: dict, s: BoardSettings, cases, scorer, out: Path) -> dict:
    z, label = cases
    n, k = len(z), s.alpha_steps
    alphas = np.linspace(-1.0, 1.0, k)
    cond = name in CONDITIONAL
    groups = groups_for(ds, g, z, label, scorer)
    zz, ll = np.repeat(z, k, axis=0), np.repeat(label, k, axis=0)
    gg = None if groups is None else np.repeat(groups, k)
    scores, small, edit_s = {}, {}, 0.0
    for p in CONTROLLED:
        t = time.perf_counter()
        res = edit(g, zz, ll, {p: np.tile(alphas, n)}, ds, conditional=cond, group=gg, batch_size=s.batch_size)
        edit_s += time.perf_counter() - t
        judge_all(models, s, res.images, n, k, p, scores)
        small[p] = F.interpolate(res.images, size=(32, 32), mode="area").reshape(n, k, -1).numpy()
        strip = postprocess(res.images[:k])                     # case 0's row
        small[p + "_strip"] = np.concatenate(list(strip), axis=1)
    atomic_write_png(out / "strip.png", np.concatenate([small[p + "_strip"] for p in CONTROLLED], axis=0))
    np.savez_compressed(out / "scores.npz", alphas=alphas, **scores)
    return summarise(name, ds, scores, alphas, small, edit_s / (3 * n * k) * 1000, models, n)


def score_oracle(world, models: dict, s: BoardSettings, cases, res: int, out: Path) -> dict:
    """The oracle row: the world's render of each case's person with one controlled parameter moved
    by α · target_stds · its world std (clipped to the world's range), everything else unchanged; the
    judges' leak here is their own cross-talk, the floor for every method."""
    z = cases[0][:, :world.z_dim]
    t = world.truth(z)
    ref = world.truth(draw_latents(2000, world.z_dim, 0, s.seed, "seeded", CALIBRATION_STREAM + 1)[0])
    n, k = len(z), s.alpha_steps
    alphas = np.linspace(-1.0, 1.0, k)
    scores, small = {}, {}
    for p, col in WORLD_COLUMNS.items():
        rows = t.loc[t.index.repeat(k)].reset_index(drop=True)
        step = s.target_stds * float(ref[col].std())
        rows[col] = np.clip(rows[col].to_numpy() + np.tile(alphas, n) * step, ref[col].min(), ref[col].max())
        rgb, _ = render_batch(rows, res)
        images = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        judge_all(models, s, images, n, k, p, scores)
        small[p] = F.interpolate(images, size=(32, 32), mode="area").reshape(n, k, -1).numpy()
        small[p + "_strip"] = np.concatenate(list(rgb[:k]), axis=1)
    atomic_write_png(out / "strip.png", np.concatenate([small[p + "_strip"] for p in CONTROLLED], axis=0))
    np.savez_compressed(out / "scores.npz", alphas=alphas, **scores)
    ds = EditDirections("oracle", "label", meta={"samples_needed": 0, "fit_seconds": 0.0})
    return summarise("oracle", ds, scores, alphas, small, float("nan"), models, n)


def same_settings(prev: dict, key: dict) -> bool:
    """Whether a finished method's ``result.json`` was made with ``key``; compared as JSON holds them
    (tuples come back as lists); a result without settings (older runs) counts as the same."""
    same = json.loads(json.dumps(key))
    return prev.get("settings", same) == same


def _finite_mean(a) -> float:
    a = np.asarray(a, np.float64)
    return float(a[np.isfinite(a)].mean()) if np.isfinite(a).any() else float("nan")


def _mean(leak: dict, targets) -> float:
    vals = [v for key, v in leak.items() if key.split("->")[1] in targets]
    return float(np.mean(vals)) if vals else float("nan")


def agreement(passed: dict) -> dict:
    """How far the judges agree on one method: cases passing by every judge (of the cases all of them
    read) and the gap between the highest and the lowest pass share (a method pleasing one judge only
    shows a large gap)."""
    if not passed:
        return {}
    common = min(len(v) for v in passed.values())
    every = np.logical_and.reduce([v[:common] for v in passed.values()])
    shares = {jn: float(v.mean()) for jn, v in passed.items()}
    return {"passes_every_judge": int(every.sum()), "n_cases": int(common),
            "pass_share_gap": float(max(shares.values()) - min(shares.values())),
            "most_pleased": max(shares, key=shares.get), "least_pleased": min(shares, key=shares.get)}


def summarise(name, ds, scores, alphas, small, edit_ms, models, n) -> dict:
    judges, passed = {}, {}
    for jn in models["judges"]:
        r = {p: pearson_rows(alphas, scores[f"{jn}|{p}|{p}"]) for p in CONTROLLED if f"{jn}|{p}|{p}" in scores}
        if len(r) < len(CONTROLLED):
            continue
        ok = np.ones(len(r[CONTROLLED[0]]), bool)
        for p in CONTROLLED:
            ok &= np.nan_to_num(r[p], nan=-1.0) >= PASS_THRESHOLDS[p]
        passed[jn] = ok
        leak = {f"{p}->{q}": _finite_mean(np.abs(pearson_rows(alphas, scores[f"{jn}|{p}|{q}"])))
                for p in CONTROLLED for q in CONTROLLED + LEAK_OTHER if q != p and f"{jn}|{p}|{q}" in scores}
        # leak size: how far q moves (in its spread over the unedited cases) per spread p moves
        mid = len(alphas) // 2
        spread = {q: float(np.std(scores[f"{jn}|{CONTROLLED[0]}|{q}"][:, mid])) or 1.0 for q in CONTROLLED + LEAK_OTHER
                  if f"{jn}|{CONTROLLED[0]}|{q}" in scores}
        size = {}
        for p in CONTROLLED:
            own = np.abs(slope_rows(alphas, scores[f"{jn}|{p}|{p}"])).mean() / spread[p]
            for q in spread:
                if q != p:
                    size[f"{p}->{q}"] = float(np.abs(slope_rows(alphas, scores[f"{jn}|{p}|{q}"])).mean() / spread[q] / own)
        judges[jn] = {"passes": int(ok.sum()), "n_cases": int(len(ok)), "mean_r": {p: float(np.nanmean(r[p])) for p in CONTROLLED},
                      "leak": leak, "leak_size": size,
                      "leak_controlled": _mean(leak, CONTROLLED), "leak_other": _mean(leak, LEAK_OTHER),
                      "leak_size_controlled": _mean(size, CONTROLLED), "leak_size_other": _mean(size, LEAK_OTHER)}
    within = np.mean([np.linalg.norm(small[p] - small[p][:, len(alphas) // 2:len(alphas) // 2 + 1], axis=2).mean()
                      for p in CONTROLLED])
    base = small[CONTROLLED[0]][:, len(alphas) // 2]
    across = np.linalg.norm(base[:, None] - base[None], axis=2)[~np.eye(len(base), dtype=bool)].mean()
    meta = ds.meta
    fit_s = float(meta.get("fit_seconds", 0.0)) + float(meta.get("sample_seconds", meta.get("pick_seconds", 0.0)))
    return {"method": name, "space": ds.space, "n_cases": n, "judges": judges, "agreement": agreement(passed),
            "identity_spread": float(within / across) if across > 0 else float("nan"),
            "samples_needed": int(meta.get("samples_needed", 0)), "fit_seconds": fit_s,
            "edit_ms_per_image": float(edit_ms), "scales": dict(ds.scales),
            "calibration": meta.get("calibration", {})}


# ----------------------------------------------------------------------------- the run

RESTART = "remove the leaderboard folder (or pass --out elsewhere) to start again"


def finished_board(out: Path, consumed: dict, s: BoardSettings) -> dict | None:
    """The metrics of a finished board made from exactly these inputs and settings, else None."""
    if not lineage.finished_from(out, consumed):
        return None
    metrics = json.loads((out / lineage.COMPLETION).read_text())
    same = json.loads(json.dumps({f.name: getattr(s, f.name) for f in fields(s)}))
    return metrics if metrics.get("settings") == same else None


def run_leaderboard(profile, s: BoardSettings, out: Path, progress: bool = True, force: bool = False,
                    run_config=None, inputs=None) -> dict:
    """The board (module docstring). Lineage (pipeline.lineage): the inputs of
    :func:`stages.leaderboard_inputs.upstream_records` are checked before anything is read or written,
    a finished board from the same inputs and settings is returned as it is, work made from other
    inputs is refused, ``metrics.json`` is written last. ``inputs(profile, s)`` replaces
    :func:`stages.leaderboard_inputs.load_models` (tests)."""
    t0 = time.perf_counter()
    consumed = upstream_records(profile, s.generator_checkpoint, s.methods)
    if not force and (done := finished_board(out, consumed, s)) is not None:
        if progress:
            print(f"{out}: finished from the same inputs and settings; nothing to do (--force redoes it)")
        return done
    lineage.begin(out, consumed, RESTART)
    if run_config is not None:
        write_run_config(out / "run_config.json", run_config)
    models = (inputs or load_models)(profile, s)
    g9 = models["g9"]
    scorer = fit_scorer(models, s)
    truth = (lambda images: measure(models["judges"]["evaluator"], images))
    cache: dict = {}

    def fit_sample() -> ScoredSample:          # drawn once, and only when a method is (re)fitted
        if "sample" not in cache:
            cache["sample"] = draw_sample(g9, scorer, max(s.n_fit, s.n_pick), seed=s.seed)
            # the truth spread of each property (the evaluator on the fit sample, or on a pick-size sample)
            truth_scores = cache["sample"].scores if s.fit_judge == "evaluator" else \
                draw_sample(g9, truth, s.n_pick, seed=s.seed).scores
            cache["spread"] = {p: float(np.std(truth_scores[p])) for p in CONTROLLED}
        return cache["sample"]
    z_dim, l_dim = g9.cfg.z_dim, g9.spec.label_dim
    cases = draw_latents(s.n_cases, z_dim, l_dim, s.seed, "seeded", CASE_STREAM)
    cal = draw_latents(s.n_calibrate, z_dim, l_dim, s.seed, "seeded", CALIBRATION_STREAM)
    results = {}
    for name in s.methods:
        mdir = out / "methods" / name
        done = mdir / "result.json"
        key = {f.name: getattr(s, f.name) for f in fields(s) if f.name not in ("methods", "batch_size")}
        if done.is_file() and not force:
            prev = json.loads(done.read_text())
            if same_settings(prev, key):
                results[name] = prev
                continue
            print(f"{name}: finished with other settings; redone")
            shutil.rmtree(mdir)
        if name == "v3_label" and models["g3"] is None:
            print(f"{name}: skipped (no shipped FineTune-v3)")
            continue
        mdir.mkdir(parents=True, exist_ok=True)
        if name == "oracle":
            if "world_seed" not in profile:
                print("oracle: skipped (the profile has no synthetic world)")
                continue
            w = world_of(int(profile["generator"]["z_dim"]), int(profile["world_seed"]))
            results[name] = {**score_oracle(w, models, s, cases, int(profile["resolution"]), mdir), "settings": key}
            atomic_write_json(done, results[name])
            continue
        g = models["g3"] if name == "v3_label" else g9
        base = CONDITIONAL.get(name, name)
        ds = fit_method(base, models, s, fit_sample(), scorer, out, cache)
        spread = cache["spread"]
        kw = {"conditional": name in CONDITIONAL}
        cal_groups = groups_for(ds, g, *cal, scorer)
        if cal_groups is not None:
            kw["group"] = cal_groups
        for p in CONTROLLED:
            calibrate(g, ds, truth, *cal, target=s.target_stds * spread[p], properties=(p,), **kw)
        ds.meta["row"] = {"method": name, "conditional": name in CONDITIONAL}
        ds.save(mdir / EDIT_SET)               # the set as this row edits: its α scales saved with it (ISSUES #53)
        results[name] = {**score_method(name, ds, g, models, s, cases, scorer, mdir), "settings": key}
        atomic_write_json(done, results[name])
        if progress:
            ev = results[name]["judges"].get("evaluator", {})
            print(f"{name}: evaluator passes {ev.get('passes')}/{s.n_cases}, "
                  f"fit {results[name]['fit_seconds']:.1f}s, {time.perf_counter() - t0:.0f}s so far", flush=True)
    metrics = {"generator": models["source"], "settings": {f.name: getattr(s, f.name) for f in fields(s)},
               "judges": sorted(models["judges"]), "judge_notes": models["judge_notes"],
               "truth_spread": cache.get("spread", "(all methods resumed)"), "methods": results,
               "inputs": consumed, "seconds": time.perf_counter() - t0}
    metrics["acceptance"] = acceptance(metrics)
    write_outputs(out, metrics, completion=False)
    lineage.close_stage(out, consumed, metrics)            # lineage.json, then metrics.json last
    return metrics


RANGES = {**{k: (lambda v: v >= 1, "an integer >= 1") for k in ("n_cases", "n_calibrate", "n_fit", "n_pick", "n_pca",
                                                                  "batch_size", "gradient_max_epochs")},
          "alpha_steps": (lambda v: v >= 3, "an integer >= 3"), "parsing_cases": (lambda v: v >= 0, "an integer >= 0"),
          "target_stds": (lambda v: v > 0, "a number > 0")}


def main(profile_name: str, consts: dict, args=None, out: str | None = None) -> dict:
    profile = profile_of(profile_name)
    runtime = {k: consts.pop(k) for k in ("threads", "progress", "force") if k in consts}
    given = {k: v for k, v in (vars(args) if args is not None else {}).items() if v is not None}
    runtime.update({k: given.pop(k) for k in list(given) if k in runtime})
    cfg = resolve(consts, profile, "leaderboard", given)
    if runtime.get("threads"):
        torch.set_num_threads(int(runtime["threads"]))
    s = BoardSettings(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.values.items()})
    unknown = [m for m in s.methods if m not in ALL_METHODS]
    if unknown:
        raise InputError(f"unknown methods {unknown}; expected some of {ALL_METHODS}")
    for k, (ok, what) in RANGES.items():        # before anything is read or written
        if not ok(getattr(s, k)):
            raise InputError(f"{cfg.sources[k]}: {k} must be {what}, got {getattr(s, k)!r}")
    target = Path(out) if out else profile.data_root / OUT_SUBDIR
    return run_leaderboard(profile, s, target, bool(runtime.get("progress", True)), bool(runtime.get("force", False)),
                           run_config=cfg)
