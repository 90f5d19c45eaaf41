"""Stage 7, VectorFind-v9 (``run_vectorfind_v9.py``): directions that open the eyes, the mouth and
turn the head, found at one extraction point of the v9 generator, then the original's case test.

One run = (method, point, n, α scale) in ``<data root>/stage7/runs/<method>_<point>_n<n>_x<scale>/``:

1. samples: the first n of the shared seeded sample cache (``stages/vectorfind_samples``), scored
   by the fitting judge (property CNN by default); medians from the first ``median_n`` samples
   (the original's rule, 02a M10) in ``stage7/property_scores_mean_and_median.csv``;
2. directions: SVM vector CSVs (``property_score_vectors/``, the original's names and format),
   gradient MLPs (``models/stylegan_gen_vector_find_v9_nn_{p}.pth``, original keys) — kept, so a
   re-run skips fitting;
3. the visual check strip, then the test of spec 02 §5 on ``cases`` seeded cases (50 images each,
   mouth × eyes × pose; JPEG round trip; pass iff |r| ≥ 0.92 / 0.88 / 0.88 on unrounded r)
   measured by every test judge at once; the original's files for the fitting judge, every
   judge's r in ``judges.csv``; each finished case is kept (``test_####/case_judges.json``), so
   an interrupted test resumes;
4. the QA re-test of the passing cases from their saved rows (z, label rounded to 4 dp, group);
5. ``metrics.json`` + ``report.md`` (``stages/vectorfind_report``), and one row in the original's
   aggregate log ``stage7/test_result/``.

``--sweep`` runs the issue's grid (``stages/vectorfind_sweep``) and writes one aggregate table.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from editing.directions import project_out
from editing.vectorfind_adapter import case_editor
from evaluation.scorers import JudgeScorer
from pipeline import lineage
from pipeline.config import check_value, resolve
from pipeline.io import InputError, atomic_write_bytes, atomic_write_csv, atomic_write_json, sha256_file
from pipeline.profiles import load_profile
from vectorfind import files as vf_files
from vectorfind.cases import METHODS, alpha_table, check_method, passes, pearson, run_case
from vectorfind.directions import DirectionSet
from vectorfind.gradient import GradientNets, train_gradient_nets, train_property_mlp
from vectorfind.groups import Medians
from vectorfind.protocols import CONTROLLED, POINTS, check_point
from vectorfind.sampling import case_latents, sample
from vectorfind.svm import fit_svm_from_samples
from vectorfind.v9_adapter import PATHS

from . import vectorfind_report as report
from . import vectorfind_local, vectorfind_sweep
from .vectorfind_inputs import build_scorers, generator_file, load_generator, region_parser
from .vectorfind_oracle import matched_label_per_alpha, matched_oracle_leak, oracle_leak
from .vectorfind_samples import ensure_samples, load_samples, ordered_map

RUNTIME = ("threads", "progress", "sweep")
NN_FILE = "stylegan_gen_vector_find_v9_nn_{p}.pth"
RESTART = "remove the run folder to start again"


class MultiScorer:
    """The fitting judge's scores under their own names, every other test judge's as ``judge/property``.
    Each judge measures a batch once (the property CNN's hairstyle comes from the evaluator, which
    is also a test judge: ``evaluation.scorers.measure_once``)."""

    def __init__(self, scorers: dict, primary: str):
        self.scorers, self.primary = scorers, primary

    def __call__(self, images):
        memo = {}
        run = lambda s: s(images, memo=memo) if isinstance(s, JudgeScorer) else s(images)   # noqa: E731
        out = dict(run(self.scorers[self.primary]))
        for name, s in self.scorers.items():
            if name != self.primary:
                out.update({f"{name}/{k}": v for k, v in run(s).items()})
        return out


def run_dir_name(method: str, point: str, n: int, scale: float, rng_order: str = "seeded",
                 conditional: bool = False, side=(), pixel_local: float | None = None) -> str:
    """``pixel_local``: the λ of a pixel-local run (suffix ``_pl<λ>``), None when off."""
    return (f"{method}_{point}_n{n}_x{scale:g}" + ("_original" if rng_order == "original" else "")
            + ("_cond" + "".join(f"+{q.replace('/', '-')}" for q in side) if conditional else "")
            + (f"_pl{pixel_local:g}" if pixel_local is not None else ""))


def pixel_local_of(cfg: dict) -> float | None:
    """λ when the run's SVM directions are made pixel-local (svm and mixed; gradient has none), else None."""
    return float(cfg["pixel_local_lambda"]) if cfg.get("pixel_local") and cfg["method"] != "gradient" else None


def conditional_directions(ds: DirectionSet, extra=()) -> DirectionSet:
    """Each (property, group) SVM direction with the same group's other controlled directions and the
    ``extra`` directions projected out (InterFaceGAN's conditional manipulation,
    ``editing.directions.project_out``), unit float64. Cuts what an edit of one property does to the
    others' read-outs; the fitted files stay as they are."""
    out = DirectionSet(ds.point)
    for (p, g), v in ds.vectors.items():
        out.vectors[(p, g)] = project_out(v, [ds.vectors[(q, g)] for q in ds.properties
                                              if q != p and (q, g) in ds.vectors] + list(extra))
    return out


def readout_directions(mid: np.ndarray, scores: dict, names) -> list:
    """The least-squares read-out of each named score from the mid vectors (ridge 1e-3 of the mean
    variance, float64): a move orthogonal to it leaves that linear read-out unchanged, so projecting
    it out of a direction conditions the edit on that property (``--condition-side``)."""
    m = np.asarray(mid, np.float64)
    m = m - m.mean(axis=0)
    gram = m.T @ m
    gram[np.diag_indices_from(gram)] += 1e-3 * np.trace(gram) / len(gram)
    out = []
    for q in names:
        y = np.asarray(scores[q], np.float64)
        out.append(np.linalg.solve(gram, m.T @ (y - y.mean())))
    return out


def side_scores(samples, cache: Path | None, n: int, point: str, names, seed: int) -> dict:
    """The scores ``names`` of the run's samples: the fitting judge's, else another judge's in the cache
    (``judge/property`` names, e.g. ``evaluator/old``)."""
    out = {}
    for q in names:
        judge, _, prop = q.rpartition("/")
        if not judge and prop in samples.scores:
            out[q] = samples.scores[prop]
            continue
        other = load_samples(cache, n, point, judge, seed) if judge and cache is not None else None
        if other is None or prop not in other.scores:
            raise InputError(f"--condition-side {q}: no such score among the run's samples "
                             f"(fitting judge: {sorted(samples.scores)}; another judge's as judge/property)")
        out[q] = other.scores[prop]
    return out


# ------------------------------------------------------------------------------------------ medians

def medians_of(stage_dir: Path, cache: Path, judge: str, median_n: int) -> Medians:
    """The medians file of this stage (written once from the first ``median_n`` cached samples)."""
    path = stage_dir / f"property_scores_mean_and_median_{judge}_n{median_n}.csv"
    if path.is_file():
        return Medians.from_table(pd.read_csv(path))
    s = load_samples(cache, median_n, "w", judge)
    med = Medians.from_scores(s.scores)
    means = {p: round(float(np.mean(np.round(s.scores[p].astype(np.float64), 4))), 4) for p in med.as_dict()}
    atomic_write_csv(path, med.to_table(means), float_format="%.4f")
    return med


# ------------------------------------------------------------------------------------------ fitting

def fit_or_load(out: Path, method: str, samples, medians: Medians, cfg: dict) -> tuple:
    """(DirectionSet | None, GradientNets | None, quality, seconds) — loaded when this run fitted before."""
    fit_json = out / "fit.json"
    svm_dir, nn_dir = out / "property_score_vectors", out / "models"
    svm_props = {"svm": CONTROLLED, "gradient": (), "mixed": ("mouth", "pose")}[method]
    nn_props = {"svm": (), "gradient": CONTROLLED, "mixed": ("eyes",)}[method]
    if fit_json.is_file():
        rec = json.loads(fit_json.read_text())
        ds = DirectionSet.load(svm_dir, samples.point, svm_props) if svm_props else None
        nets = GradientNets.from_state_dicts(samples.point, {p: torch.load(nn_dir / NN_FILE.format(p=p), weights_only=True)
                                                             for p in nn_props}, rec["quality"]) if nn_props else None
        return ds, nets, rec["quality"], rec["seconds"], rec.get("svm_table")
    quality, seconds, table = {}, {}, None
    ds = nets = None
    if svm_props:
        t = time.perf_counter()
        r = fit_svm_from_samples(samples, medians, properties=svm_props, ratio=cfg["ratio"], rng_order=cfg["rng_order"],
                                 seed=None if cfg["seed"] < 0 else cfg["seed"])
        seconds["svm"] = time.perf_counter() - t
        ds = r.directions
        ds.save(svm_dir)
        quality.update(r.accuracy)
        table = r.table.to_dict(orient="list")
    if nn_props:
        t = time.perf_counter()
        nets = train_gradient_nets(samples, samples.point, nn_props, rng_order=cfg["rng_order"],
                                   seed=None if cfg["seed"] < 0 else cfg["seed"],
                                   max_epochs=int(cfg["nn_max_epochs"]))
        seconds["gradient"] = time.perf_counter() - t
        for p, sd in nets.state_dicts().items():
            buf = io.BytesIO()
            torch.save(sd, buf)
            atomic_write_bytes(nn_dir / NN_FILE.format(p=p), buf.getvalue())
        quality.update(nets.test_mse)
    atomic_write_json(fit_json, {"quality": quality, "seconds": seconds, "svm_table": table})
    return ds, nets, quality, seconds, table


def side_nets(out: Path, nets: GradientNets, samples, side_q: dict, cfg: dict) -> tuple:
    """(the run's nets with local conditioning on, fit record): one MLP per side score (``--condition-side``)
    trained by the gradient method's rule on the run's samples (``models/…_nn_{q}.pth``, kept), whose
    gradients the per-case directions are projected off (``vectorfind.gradient.GradientNets``)."""
    rec_path = out / "side_fit.json"
    rec = json.loads(rec_path.read_text()) if rec_path.is_file() else {"quality": {}, "seconds": {}}
    side = {}
    for i, (q, y) in enumerate(side_q.items()):
        path = out / "models" / NN_FILE.format(p=q.replace("/", "-"))
        if path.is_file() and f"side {q}" in rec["quality"]:
            side[q] = GradientNets.from_state_dicts(samples.point, {q: torch.load(path, weights_only=True)}).nets[q]
            continue
        t = time.perf_counter()
        fit = train_property_mlp(samples.mid, y, seed=int(cfg["seed"]) * 10 + len(CONTROLLED) + i,
                                 rng_order=cfg["rng_order"], max_epochs=int(cfg["nn_max_epochs"]))
        buf = io.BytesIO()
        torch.save(fit.model.state_dict(), buf)
        atomic_write_bytes(path, buf.getvalue())
        side[q] = fit.model
        rec["quality"][f"side {q}"] = fit.test_mse
        rec["seconds"][f"side {q}"] = time.perf_counter() - t
        atomic_write_json(rec_path, rec)
    return dataclasses.replace(nets, side=side, conditional=True), rec


# ------------------------------------------------------------------------------------------ test

def judge_corr(res, judges: list, primary: str) -> dict:
    """judge -> {property: unrounded r} for one case (scores rounded to 4 dp as the test does)."""
    out = {}
    for j in judges:
        corr = {}
        for p in CONTROLLED:
            key = p if j == primary else f"{j}/{p}"
            corr[p] = pearson(res.table[f"{p}_pm"], np.round(res.other_scores[key].astype(np.float64), 4))
        out[j] = corr
    return out


def leak_rows(res, judge: str, primary: str) -> dict:
    """``report.leak_of`` for one case through ``judge`` (its scores under their plain names)."""
    pre = "" if judge == primary else f"{judge}/"
    return report.leak_of(res.table, {k[len(pre):]: v for k, v in res.other_scores.items()
                                      if k.startswith(pre) and "/" not in k[len(pre):]})


def run_test(out: Path, gen, scorer: MultiScorer, judges: list, point: str, method: str, z, label, cases,
             *, svm, nets, medians, scale: float, jpeg: bool, groups=None, stop_at=None, progress=True,
             case_root: Path | None = None, dropout: bool = False, workers: int = 1) -> list[dict]:
    """The case test with resume: one ``case_judges.json`` per finished case. ``workers`` > 1 runs
    that many cases at once in threads (``stages.vectorfind_samples.ordered_map``); the records,
    the stop rule and the printed lines keep the cases' order."""
    case_root = case_root or out / vf_files.CASE_ROOT
    editor = case_editor(method, svm, nets, dropout)      # the editing API's edit (issue 19), as vectorfind's

    def record(row: int) -> dict:
        i = cases[row]
        mark = case_root / vf_files.case_folder(i) / "case_judges.json"
        if mark.is_file():
            return json.loads(mark.read_text())
        res = run_case(gen, scorer, point, method, i, z[row], label[row], svm=svm, nets=nets, medians=medians,
                       group=None if groups is None else groups[row], scale=scale, jpeg=jpeg, dropout=dropout,
                       editor=editor)
        vf_files.write_case(case_root, method, res)
        rec = {"case": i, "group": res.group, "z": res.z.tolist(), "label": res.label.tolist(),
               "corr": judge_corr(res, judges, scorer.primary), "seconds": res.seconds,
               "leak": {j: leak_rows(res, j, scorer.primary) for j in judges}}
        atomic_write_json(mark, rec)
        return rec

    done, results = 0, []
    for rec in ordered_map(record, range(len(cases)), workers):
        rec["passed"] = {j: passes(rec["corr"][j]) for j in judges}
        results.append(rec)
        done += rec["passed"][scorer.primary]
        if progress:
            print(f"  case {rec['case']}: " + ", ".join(f"{j} {'O' if rec['passed'][j] else 'X'}" for j in judges),
                  flush=True)
        if stop_at and done >= stop_at:
            break
    return results


class _Res:
    """The fields ``vectorfind.files`` needs from a case, rebuilt from its record."""

    def __init__(self, rec: dict, judge: str):
        self.case, self.group = rec["case"], rec["group"]
        self.corr = rec["corr"][judge]
        self.passed = passes(self.corr)
        self.z, self.label = np.asarray(rec["z"], np.float32), np.asarray(rec["label"], np.float32)


def write_original_files(folder: Path, method: str, point: str, n: int, records: list, judge: str) -> dict:
    return vf_files.write_test_report(folder, method, point, n, [_Res(r, judge) for r in records])


# ------------------------------------------------------------------------------------------ one run

def workers_of(cfg: dict) -> int:
    """Threads that make chunks / run cases at once; 1 with the seeded train-mode dropout, whose
    masks follow the property CNN's call count (the calls' order must be the cases')."""
    return 1 if cfg.get("dropout") else int(cfg.get("workers", 1))


def cached_samples(cache: Path, gen, grec: dict, scorers: dict, cfg: dict, n: int, progress: bool) -> tuple:
    """(medians, the first n samples at the run's point) from the shared seeded cache (filled as needed)."""
    fit_judges = sorted({cfg["fit_judge"], cfg["hairstyle_judge"]})
    key = {"generator": grec["outputs_digest"], "generator_source": grec["source"], "seed": int(cfg["seed"]),
           "jpeg": False, "judges": fit_judges, "hairstyle_judge": cfg["hairstyle_judge"],
           "dropout": bool(cfg["dropout"]), "chunk": 500}
    # the synthesis' last bits depend on its batch (vectorfind.v9_adapter): caches made before these
    # settings existed used calls of 50 on the plain path (= exact), so only other values join the key
    if cfg.get("inference_path", "exact") == "relaxed":
        key["inference_path"] = "relaxed"
    if int(cfg.get("image_batch", 50)) != 50:
        key["image_batch"] = int(cfg["image_batch"])
    ensure_samples(cache, key, gen, {j: scorers[j] for j in fit_judges}, max(n, int(cfg["median_n"])),
                   seed=int(cfg["seed"]), batch_size=int(cfg["batch_size"]), progress=progress, workers=workers_of(cfg))
    medians = medians_of(cache.parent, cache, cfg["fit_judge"], int(cfg["median_n"]))
    return medians, load_samples(cache, n, cfg["point"], cfg["fit_judge"], int(cfg["seed"]))


def profile_inputs(profile, cfg: dict, judges: list) -> tuple:
    """(MidGenerator, generator record, judge -> scorer, judge descriptions) from the profile."""
    gen, grec = load_generator(profile, cfg["generator"], cfg["generator_key"] or None, int(cfg["batch_size"]),
                               int(cfg.get("image_batch", cfg["batch_size"])), cfg.get("inference_path", "exact"))
    scorers, desc = build_scorers(profile, judges, hairstyle_judge=cfg["hairstyle_judge"],
                                  dropout=bool(cfg["dropout"]),
                                  dropout_seed=None if int(cfg["dropout_seed"]) < 0 else int(cfg["dropout_seed"]))
    return gen, grec, scorers, desc


def run_one(profile, cfg: dict, progress: bool = True, inputs=None) -> dict:
    """One run (module docstring); ``inputs(profile, cfg, judges)`` replaces :func:`profile_inputs` (tests)."""
    method, point, n = check_method(cfg["method"]), check_point(cfg["point"]), int(cfg["n"])
    scale = float(cfg["alpha_scale"])
    root = profile.data_root
    stage_dir = root / "stage7"
    side = tuple(q for q in cfg.get("condition_side", ()) if q) if cfg.get("conditional") else ()
    local = pixel_local_of(cfg)
    out = stage_dir / "runs" / run_dir_name(method, point, n, scale, cfg["rng_order"], bool(cfg.get("conditional")),
                                            side, local)
    if (out / lineage.COMPLETION).is_file():
        gen_path = generator_file(profile, cfg["generator"])
        if gen_path is not None and gen_path.is_file():
            lineage.check_consumed(out, {"generator": {"outputs_digest": sha256_file(gen_path)}}, RESTART)
        return json.loads((out / lineage.COMPLETION).read_text())
    t0 = time.perf_counter()
    judges = list(dict.fromkeys([cfg["fit_judge"], *cfg["test_judges"]]))
    gen, grec, scorers, desc = (inputs or profile_inputs)(profile, cfg, judges)
    lineage.begin(out, {"generator": grec}, RESTART)
    res = cfg.get("_resolved")
    atomic_write_json(out / "run_config.json", {"settings": {k: v for k, v in cfg.items() if not k.startswith("_")},
                                                "sources": dict(res.sources) if res is not None else {}})
    original = cfg["rng_order"] == "original"
    seed = None if int(cfg["seed"]) < 0 else int(cfg["seed"])
    t = time.perf_counter()
    if original:          # the original's order: numpy's global RNG (z then label), no shared cache
        samples = sample(gen, scorers[cfg["fit_judge"]], point, n, seed=seed, rng_order="original",
                         batch_size=int(cfg["batch_size"]))
        medians = Medians.from_scores(samples.scores)
    else:
        medians, samples = cached_samples(stage_dir / "samples", gen, grec, scorers, cfg, n, progress)
    sampling_s = time.perf_counter() - t
    svm, nets, quality, fit_s, svm_table = fit_or_load(out, method, samples, medians, cfg)
    if cfg.get("conditional") and side:
        side_q = side_scores(samples, None if original else stage_dir / "samples", n, point, side, int(cfg["seed"]))
    if cfg.get("conditional") and svm is not None:
        svm = conditional_directions(svm, readout_directions(samples.mid, side_q, side) if side else ())
        svm.save(out / "property_score_vectors_conditional")
    if local is not None and svm is not None:        # stages/vectorfind_local: eyes / mouth pixel-local
        t = time.perf_counter()
        svm = vectorfind_local.localize(out, stage_dir, gen, grec, samples, svm, cfg, region_parser(profile), progress)
        fit_s["pixel_local"] = time.perf_counter() - t
    if cfg.get("conditional") and nets is not None:      # local conditioning of the gradient directions
        nets, side_fit = side_nets(out, nets, samples, side_q if side else {}, cfg)
        quality.update(side_fit["quality"])
        fit_s.update(side_fit["seconds"])
    scorer = MultiScorer(scorers, cfg["fit_judge"])
    cases = list(range(int(cfg["cases"])))
    z, label = case_latents(cases, gen.z_dim, gen.label_dim, seed, cfg["rng_order"])
    strip = report.visual_check(out, gen, scorer, point, method, z[0], label[0], svm, nets, medians, scale)
    t = time.perf_counter()
    records = run_test(out, gen, scorer, judges, point, method, z, label, cases, svm=svm, nets=nets,
                       medians=medians, scale=scale, jpeg=bool(cfg["jpeg"]), stop_at=int(cfg["stop_at"]) or None,
                       progress=progress, dropout=bool(cfg["dropout"]), workers=workers_of(cfg))
    test_s = time.perf_counter() - t
    written = write_original_files(out / vf_files.REPORT_DIR, method, point, n, records, cfg["fit_judge"])
    qa = qa_retest(out, gen, scorer, judges, point, method, records, svm, nets, medians, scale, cfg, progress)
    seconds = {"total": time.perf_counter() - t0, "sampling_now": sampling_s, "test": test_s, **fit_s}
    oracle_judges = {j: scorers[j] for j in judges if j != "parsing"}
    oracle = oracle_leak(profile, stage_dir, oracle_judges, len(records), int(cfg["seed"])) \
        if "world_seed" in profile else None
    matched = None
    if oracle is not None and records:                # the oracle on the run's terms (stages/vectorfind_oracle)
        mj = "evaluator" if "evaluator" in oracle["judges"] else cfg["fit_judge"]
        per_alpha = matched_label_per_alpha([r["leak"][mj] for r in records], oracle["judges"][mj])
        matched = matched_oracle_leak(profile, out, oracle_judges, alpha_table(method, scale), bool(cfg["jpeg"]),
                                      per_alpha, len(records), int(cfg["seed"]), refine=1, judge=mj,
                                      target={p: report.own_slope([r["leak"][mj] for r in records], p)
                                              for p in CONTROLLED})
        matched["matched_by"] = mj
    metrics = report.metrics(cfg, judges, records, qa, quality, seconds, n, medians, desc, grec, svm_table, oracle,
                             matched)
    agg = vf_files.aggregate_row(method, n, seconds["total"], vf_files.statistics_frame(
        [_Res(r, cfg["fit_judge"]) for r in records]), ratio=float(cfg["ratio"]), quality=quality)
    metrics["aggregate_row"] = agg
    metrics["files"] = {k: str(v.relative_to(out)) for k, v in written.items()}
    report.write_report(out, metrics, gen, scorer, point, method, records, z, label, svm, nets, medians, scale, strip)
    files = [p for p in out.rglob("*") if p.is_file()
             and p.name not in (lineage.LINEAGE, lineage.COMPLETION, "aggregate_row_appended")]
    appended = out / "aggregate_row_appended"            # a report-only re-run does not add the row twice
    if not appended.is_file():
        vf_files.append_aggregate(stage_dir / "test_result" / vf_files.aggregate_file_name(method, point), method, agg)
        atomic_write_json(appended, agg)
    lineage.finish(out, files, {"generator": grec})
    atomic_write_json(out / lineage.COMPLETION, metrics)
    return metrics


def qa_retest(out, gen, scorer, judges, point, method, records, svm, nets, medians, scale, cfg, progress) -> dict:
    """Re-test the passing cases (by any judge; the original: by its judge) from their saved rows: z,
    label rounded to 4 dp (the original's CSV), and the saved group. The original's QA files list the
    cases passing by the fitting judge."""
    keep = [r for r in records if any(r["passed"].values())]
    qa_dir = out / vf_files.QA_REPORT_DIR
    if not keep:
        return {"cases": 0}
    z = np.round(np.array([r["z"] for r in keep], np.float64), 4).astype(np.float32)
    label = np.round(np.array([r["label"] for r in keep], np.float64), 4).astype(np.float32)
    groups = [r["group"] for r in keep] if method != "gradient" else None
    recs = run_test(out, gen, scorer, judges, point, method, z, label, [r["case"] for r in keep], svm=svm, nets=nets,
                    medians=medians, scale=scale, jpeg=bool(cfg["jpeg"]), groups=groups, progress=False,
                    case_root=qa_dir / vf_files.CASE_ROOT, workers=workers_of(cfg))
    fit_kept = [r for a, r in zip(keep, recs) if a["passed"][cfg["fit_judge"]]]
    if fit_kept:
        write_original_files(qa_dir, method, point, int(cfg["n"]), fit_kept, cfg["fit_judge"])
    return {"cases": len(keep), "re_passed": {j: int(sum(r["passed"][j] for r in recs)) for j in judges},
            "of_those_passing_by_judge": {j: int(sum(a["passed"][j] and b["passed"][j] for a, b in zip(keep, recs)))
                                          for j in judges},
            "passing_by_judge": {j: int(sum(a["passed"][j] for a in keep)) for j in judges}}


# ------------------------------------------------------------------------------------------ entry

RANGES = {"n": (lambda v: v >= 1, "an integer >= 1"), "cases": (lambda v: v >= 1, "an integer >= 1"),
          "median_n": (lambda v: v >= 1, "an integer >= 1"), "stop_at": (lambda v: v >= 0, "an integer >= 0"),
          "nn_max_epochs": (lambda v: v >= 1, "an integer >= 1"), "image_batch": (lambda v: v >= 1, "an integer >= 1"),
          "workers": (lambda v: v >= 1, "an integer >= 1"),
          "batch_size": (lambda v: v >= 1, "an integer >= 1"),
          "alpha_scale": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
          "ratio": (lambda v: 0 < v <= 0.5, "a share in (0, 0.5]"),
          "pixel_local_lambda": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
          "pixel_local_samples": (lambda v: v >= 1, "an integer >= 1")}


def resolve_settings(profile, consts: dict, args) -> tuple[dict, dict]:
    given = {k: v for k, v in (vars(args) if args is not None else {}).items() if k in consts}
    main_c = {k: v for k, v in consts.items() if k not in RUNTIME}
    res = resolve(main_c, profile, "stage7", {k: v for k, v in given.items() if k in main_c})
    runtime = {k: given.get(k, consts[k]) for k in RUNTIME if k in consts}
    for k in set(RUNTIME) & set(given):
        check_value(k, given[k], f"flag --{k.replace('_', '-')}")
    cfg = dict(res.values)
    cfg["_resolved"] = res
    if cfg["fit_judge"] not in ("property_cnn", "evaluator"):
        raise InputError(f"fit judge must be property_cnn or evaluator (the sampling judge), got {cfg['fit_judge']!r}")
    if cfg["rng_order"] not in ("seeded", "original"):
        raise InputError(f"--rng-order must be seeded or original, got {cfg['rng_order']!r}")
    for q in cfg.get("condition_side", ()) or ():
        if not q or q.rpartition("/")[0] not in ("", "property_cnn", "evaluator"):
            raise InputError(f"--condition-side {q!r}: expected a property of the fitting judge or judge/property "
                             f"with judge property_cnn or evaluator")
    if cfg.get("inference_path", "exact") not in PATHS:
        raise InputError(f"--inference-path must be one of {PATHS}, got {cfg['inference_path']!r}")
    if cfg["point"] not in POINTS:
        raise InputError(f"--point must be one of {POINTS}, got {cfg['point']!r}")
    if cfg["method"] not in METHODS:
        raise InputError(f"{res.sources['method']}: method must be one of {METHODS}, got {cfg['method']!r}")
    for k, (ok, what) in RANGES.items():        # before anything is read or written
        if k in cfg and not ok(cfg[k]):
            raise InputError(f"{res.sources[k]}: {k} must be {what}, got {cfg[k]!r}")
    return cfg, runtime


def main(profile_name: str, consts: dict, args=None) -> dict:
    profile = load_profile(profile_name) if isinstance(profile_name, str) else profile_name
    cfg, runtime = resolve_settings(profile, consts, args)
    if runtime.get("threads"):
        torch.set_num_threads(int(runtime["threads"]))
    if runtime.get("sweep"):
        return vectorfind_sweep.run_sweep(profile, cfg, run_one, progress=bool(runtime.get("progress", True)))
    m = run_one(profile, cfg, progress=bool(runtime.get("progress", True)))
    print(report.summary_line(m))
    return m

