"""Stage 7's figures, metrics and report: the visual check strip, per-judge pass counts and |r|,
the QA re-pass rate, leak and identity through the independent evaluator, image strips of the
best and of a typical case."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.io import atomic_write_png
from pipeline.reports import markdown_table, write_report as write_md
from stylegan.generator import postprocess
from editing.vectorfind_adapter import case_editor
from vectorfind.cases import VISUAL_ALPHAS, alpha_table, case_group, pearson
from vectorfind.groups import group_counts
from vectorfind.protocols import CONTROLLED

SIDE = ("hair_color", "hair_length", "background_mean", "old", "glasses")
LEAK_TARGETS = ("eyes", "mouth", "pose", "hair_color", "hair_length", "background_mean")


def _case(gen, scorer, point, method, z, label, medians, group=None):
    """(mid vector, group) of one case; the group read from its unedited image when not given (SVM, mixed)."""
    with torch.inference_mode():
        mid = gen.mid_vectors(torch.from_numpy(np.asarray(z, np.float32)[None]),
                              torch.from_numpy(np.asarray(label, np.float32)[None]), point).cpu().numpy()[0]
    if method != "gradient" and group is None:
        group = case_group(gen, scorer, mid, point, medians)
    return mid, group


def visual_check(out: Path, gen, scorer, point, method, z, label, svm, nets, medians, scale) -> Path:
    """One case, one property at a time, α ∈ {−2, −0.67, 0.67, 2} × scale (images only)."""
    path = out / "visual_check.png"
    if path.is_file():
        return path
    mid, group = _case(gen, scorer, point, method, z, label, medians)
    editor = case_editor(method, svm, nets)               # the editing API's edit, one property at a time
    mids = np.stack([editor(mid, {p: np.array([a * scale])}, group, 0)[0] for p in CONTROLLED for a in VISUAL_ALPHAS])
    imgs = postprocess(gen.image_from_mid(torch.from_numpy(np.ascontiguousarray(mids)), point))
    atomic_write_png(path, image_grid(imgs, len(VISUAL_ALPHAS)))     # rows eyes, mouth, pose; α ascending
    return path


def case_strip(out: Path, name: str, gen, scorer, point, method, rec, svm, nets, medians, scale) -> Path:
    """The 50 images of one case (rows: mouth × eyes; columns: pose)."""
    path = out / name
    if path.is_file():
        return path
    mid, group = _case(gen, scorer, point, method, rec["z"], rec["label"], medians, rec["group"])
    table = alpha_table(method, scale)
    edited = case_editor(method, svm, nets)(mid, {p: table[f"{p}_pm"].to_numpy() for p in CONTROLLED}, group, 0)
    imgs = postprocess(gen.image_from_mid(torch.from_numpy(np.ascontiguousarray(edited)), point))
    atomic_write_png(path, image_grid(imgs, 10))      # rows: mouth α; columns: eyes α × pose α (loop order)
    return path


def image_grid(imgs: np.ndarray, ncols: int, pad: int = 2) -> np.ndarray:
    """uint8 NHWC images in a grid (row-major), white padding."""
    n, h, w, c = imgs.shape
    rows = -(-n // ncols)
    out = np.full((rows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, np.uint8)
    for i, im in enumerate(imgs):
        r, k = divmod(i, ncols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + k * (w + pad):pad + k * (w + pad) + w] = im
    return out


def _judge_summary(records, j) -> dict:
    corr = {p: np.array([r["corr"][j][p] for r in records], np.float64) for p in CONTROLLED}
    th = {"eyes": 0.92, "mouth": 0.88, "pose": 0.88}
    return {"passes": int(sum(r["passed"][j] for r in records)), "cases": len(records),
            "mean_r": {p: float(np.nanmean(corr[p])) for p in CONTROLLED},
            "mean_abs_r": {p: float(np.nanmean(np.abs(corr[p]))) for p in CONTROLLED},
            "median_abs_r": {p: float(np.nanmedian(np.abs(corr[p]))) for p in CONTROLLED},
            "property_pass_fraction": {p: float(np.mean(np.abs(np.nan_to_num(corr[p])) >= th[p])) for p in CONTROLLED}}


def leak_of(table, scores: dict) -> dict:
    """One case through one judge: r(α_p, q) for every other property q, each side score's mean and
    std over the case's images, and the partial slope of every score on every α (least squares of the
    score on the three α columns and a constant: the grid moves all three at once)."""
    side = {q: np.asarray(scores[q], np.float64) for q in SIDE + CONTROLLED if q in scores}
    leak = {f"{p}->{q}": pearson(table[f"{p}_pm"], side[q])
            for p in CONTROLLED for q in LEAK_TARGETS if q != p and q in side}
    a = np.column_stack([np.asarray(table[f"{p}_pm"], np.float64) for p in CONTROLLED] + [np.ones(len(table))])
    slope = {}
    for q in LEAK_TARGETS:
        if q in side:
            coef = np.linalg.lstsq(a, side[q], rcond=None)[0]
            slope.update({f"{p}->{q}": float(coef[i]) for i, p in enumerate(CONTROLLED)})
    return {"leak": leak, "slope": slope, "mean": {q: float(v.mean()) for q, v in side.items()},
            "std": {q: float(v.std()) for q, v in side.items()}}


def leak_size(leaks: list) -> dict:
    """Over cases: how far q moves per unit α_p, in q's across-case spread, relative to how far p itself
    moves in its spread (the leaderboard's leak size, from the grid's partial slopes): 0 = no leak,
    1 = q moves as much as the edited property. The mean-|r| leak is near 1 for any steady drift."""
    recs = [r for r in leaks if r.get("slope")]
    if len(recs) < 2:
        return {}
    spread = {q: float(np.std([r["mean"][q] for r in recs])) for q in LEAK_TARGETS if q in recs[0]["mean"]}
    out = {}
    for p in CONTROLLED:
        own = np.mean([abs(r["slope"][f"{p}->{p}"]) for r in recs]) / (spread.get(p) or 1.0)
        for q in spread:
            if q != p and f"{p}->{q}" in recs[0]["slope"]:
                out[f"{p}->{q}"] = float(np.mean([abs(r["slope"][f"{p}->{q}"]) for r in recs])
                                         / (spread[q] or 1.0) / own) if own > 0 else float("nan")
    return out


def leak_identity(leaks: list) -> dict:
    """Over cases (``leak_of`` records): mean |r| of each α with another property; within-case std
    of the side properties vs the std of their case means (across cases)."""
    acc = {}
    for rec in leaks:
        for k, v in rec.get("leak", {}).items():
            acc.setdefault(k, []).append(abs(v) if v is not None and np.isfinite(v) else np.nan)
    ident = {}
    for q in SIDE:
        within = [r["std"][q] for r in leaks if q in r.get("std", {})]
        means = [r["mean"][q] for r in leaks if q in r.get("mean", {})]
        if within and len(means) > 1:
            across = float(np.std(means))
            ident[q] = {"within_std": float(np.mean(within)), "across_std": across,
                        "ratio": float(np.mean(within) / across) if across > 0 else float("nan")}
    return {"mean_abs_leak_r": {k: float(np.nanmean(v)) for k, v in acc.items()}, "identity": ident,
            "leak_size": leak_size(leaks)}


def metrics(cfg, judges, records, qa, quality, seconds, n, medians, desc, grec, svm_table, oracle=None,
            matched=None) -> dict:
    out = {"stage": "stage7", "method": cfg["method"], "point": cfg["point"], "n": n, "ratio": cfg["ratio"],
            "alpha_scale": cfg["alpha_scale"], "cases": len(records), "fit_judge": cfg["fit_judge"],
            "judges": {j: _judge_summary(records, j) for j in judges}, "judge_descriptions": desc,
            "quality": quality, "seconds": seconds, "qa": qa, "medians": medians.as_dict(),
            "generator": grec, "case_groups": group_counts(np.array([r["group"] or "" for r in records])),
            "leak_identity": {j: leak_identity([r["leak"][j] for r in records]) for j in judges},
            "oracle_leak_identity": {j: leak_identity(v) for j, v in (oracle or {}).get("judges", {}).items()},
            "settings": {k: v for k, v in cfg.items() if not k.startswith("_")}}
    if matched:
        out["oracle_matched_leak_identity"] = {j: leak_identity(v) for j, v in matched["judges"].items()}
        mj = matched.get("matched_by", cfg["fit_judge"])
        out["oracle_matched"] = {
            "matched_by": mj, "label_per_alpha": matched.get("label_per_alpha", matched["key"]["label_per_alpha"]), "jpeg": matched["key"]["jpeg"],
            "own_slope_run": {p: own_slope([r["leak"][mj] for r in records], p) for p in CONTROLLED},
            "own_slope_oracle": {p: own_slope(matched["judges"][mj], p) for p in CONTROLLED}}
    out["leak_excess"] = {j: leak_excess(out, j) for j in judges if j in out["oracle_leak_identity"]}
    return out


def own_slope(recs: list, p: str) -> float:
    """Mean |partial slope of p on α_p| over cases (how far an edit moves its own property per α)."""
    vals = [abs(r["slope"][f"{p}->{p}"]) for r in recs if r.get("slope")]
    return float(np.mean(vals)) if vals else float("nan")


def leak_excess(m: dict, j: str) -> dict:
    """pair -> mean |r| ours, the fixed oracle's and the matched oracle's (when measured), and both excesses."""
    ours = m["leak_identity"][j]["mean_abs_leak_r"]
    fixed = m["oracle_leak_identity"].get(j, {}).get("mean_abs_leak_r", {})
    same = m.get("oracle_matched_leak_identity", {}).get(j, {}).get("mean_abs_leak_r", {})
    out = {}
    for k, v in sorted(ours.items()):
        row = {"ours": v}
        if k in fixed:
            row.update(oracle_fixed=fixed[k], excess_fixed=v - fixed[k])
        if k in same:
            row.update(oracle_matched=same[k], excess_matched=v - same[k])
        out[k] = row
    return out


def table_row(m: dict) -> list:
    """One row like spec 02 §6.2 / §6.3 with every judge's passes."""
    q = m["quality"]
    j0 = m["judges"][m["fit_judge"]]
    row = [m["method"], m["point"], m["n"], f"{m['seconds']['total']:.0f}",
           " / ".join(f"{q[p]:.4f}" for p in CONTROLLED if p in q)]
    row += [f"{j0['mean_abs_r'][p]:.4f}" for p in CONTROLLED]
    row += [f"{sum(j0['mean_abs_r'].values()):.4f}"]
    row += [f"{s['passes']}/{s['cases']}" for s in m["judges"].values()]
    return row


def table_header(m: dict) -> list:
    return ["method", "point", "n", "time s", "acc / mse (eyes, mouth, pose)", "|r| eyes", "|r| mouth", "|r| pose",
            "sum"] + [f"passes ({j})" for j in m["judges"]]


def write_report(out: Path, m, gen, scorer, point, method, records, z, label, svm, nets, medians, scale, strip):
    j = m["fit_judge"]
    ev = "evaluator" if "evaluator" in m["judges"] else j
    ranked = sorted(records, key=lambda r: -sum(abs(np.nan_to_num(r["corr"][ev][p])) for p in CONTROLLED))
    best, typical = ranked[0], ranked[len(ranked) // 2]
    s_best = case_strip(out, "case_best.png", gen, scorer, point, method, best, svm, nets, medians, scale)
    s_typ = case_strip(out, "case_typical.png", gen, scorer, point, method, typical, svm, nets, medians, scale)
    li = m["leak_identity"].get(ev, {})
    oli = m.get("oracle_leak_identity", {}).get(ev, {})
    o_leak, o_id = oli.get("mean_abs_leak_r", {}), oli.get("identity", {})
    size, o_size = li.get("leak_size", {}), oli.get("leak_size", {})
    fmt = lambda d, k: f"{d[k]:.3f}" if k in d else "-"           # noqa: E731
    m_leak = m.get("oracle_matched_leak_identity", {}).get(ev, {}).get("mean_abs_leak_r", {})
    exc = lambda d, k, v: f"{v - d[k]:+.3f}" if k in d else "-"      # noqa: E731
    leak_rows = [[k, f"{v:.3f}", fmt(m_leak, k), exc(m_leak, k, v), fmt(o_leak, k), exc(o_leak, k, v), fmt(size, k),
                  fmt(o_size, k)] for k, v in sorted(li.get("mean_abs_leak_r", {}).items())]
    om = m.get("oracle_matched")
    matched_text = ("\n\nMatched oracle: the same people on the run's terms (its α table, JPEG "
                    f"{'on' if om['jpeg'] else 'off'}, each person's own values moved by α · L world stds, L "
                    + " / ".join(f"{om['label_per_alpha'][p]:.3f}" for p in CONTROLLED)
                    + f" for eyes / mouth / pose), so that its own move per α through {om['matched_by']} matches "
                    "the run's: " + "; ".join(f"{p} {om['own_slope_oracle'][p]:.4f} vs {om['own_slope_run'][p]:.4f}"
                                              for p in CONTROLLED)
                    + ". Fixed oracle: the SVM grid without the α scale, no JPEG, fixed moves "
                      "(stage7/oracle_leak.json).") if om else ""
    ident_rows = [[q, f"{d['within_std']:.3f}", f"{d['across_std']:.3f}", f"{d['ratio']:.2f}",
                   f"{o_id[q]['ratio']:.2f}" if q in o_id else "-"] for q, d in li.get("identity", {}).items()]
    qa = m["qa"]
    qa_text = (f"{qa['cases']} cases passed by at least one judge and were re-tested from their saved rows "
               f"(z, label rounded to 4 dp, group): "
               + "; ".join(f"{k}: {qa['of_those_passing_by_judge'][k]} of its {qa['passing_by_judge'][k]} passing cases "
                           "passed again" for k in qa.get("passing_by_judge", {}))
               if qa["cases"] else "no passing case to re-test")
    sections = [
        ("Result", markdown_table(table_header(m), [table_row(m)])
         + f"\n\nα scale {m['alpha_scale']:g}; {m['cases']} cases; fitting judge {j}; medians {m['medians']}."),
        ("Per judge", markdown_table(["judge", "passes", "mean r eyes / mouth / pose", "per-property pass fraction"],
                                     [[k, f"{s['passes']}/{s['cases']}",
                                       " / ".join(f"{s['mean_r'][p]:+.3f}" for p in CONTROLLED),
                                       " / ".join(f"{s['property_pass_fraction'][p]:.2f}" for p in CONTROLLED)]
                                      for k, s in m["judges"].items()])),
        ("QA re-test of saved rows", qa_text),
        (f"Leak through {ev} (mean |r| of α with another property)", markdown_table(
            ["α -> property", "mean |r|", "matched oracle", "excess", "fixed oracle", "excess (fixed)", "leak size",
             "oracle leak size"], leak_rows) + matched_text
         + "\n\nLeak size: q's move per unit α_p in q's across-case spread, over p's own move in its spread "
           "(partial slopes on the 50-image grid); mean |r| is near 1 for any steady drift, however small."),
        (f"Identity through {ev}", markdown_table(["property", "within-case std", "across-case std", "ratio", "oracle ratio"], ident_rows)),
        ("Images", f"![visual check]({Path(strip).name})\n\n![best case]({s_best.name})\n\n![typical case]({s_typ.name})"),
    ]
    return write_md(out, f"Stage 7: VectorFind-v9 {method} at {point}, n = {m['n']}", sections)


def summary_line(m: dict) -> str:
    return (f"{m['method']} {m['point']} n={m['n']} x{m['alpha_scale']:g}: "
            + "; ".join(f"{j} {s['passes']}/{s['cases']} pass, mean |r| "
                        + "/".join(f"{s['mean_abs_r'][p]:.3f}" for p in CONTROLLED) for j, s in m["judges"].items())
            + f"; QA {m['qa'].get('re_passed', {})} of {m['qa']['cases']}; {m['seconds']['total']:.0f} s")
