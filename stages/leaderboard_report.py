"""The leaderboard's files: ``leaderboard.csv`` (one row per method), ``metrics.json`` and
``report.md`` with a bar chart (passes per judge) and each method's image strip of case 0
(rows eyes, mouth, pose; columns α = −1 … +1)."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd

from pipeline.io import atomic_write_csv, atomic_write_json, atomic_write_text
from vectorfind.protocols import CONTROLLED

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def table(metrics: dict) -> pd.DataFrame:
    rows = []
    oracle = metrics["methods"].get("oracle", {}).get("judges", {})
    for name, r in metrics["methods"].items():
        row = {"method": name, "space": r["space"]}
        for jn, j in r["judges"].items():
            row[f"passes_{jn}"] = j["passes"]
            if j.get("n_cases", r["n_cases"]) != r["n_cases"]:      # a judge that reads fewer cases (stages 3-4)
                row[f"cases_{jn}"] = j["n_cases"]
            for p in CONTROLLED:
                row[f"r_{p}_{jn}"] = round(j["mean_r"][p], 3)
            row[f"leak_controlled_{jn}"] = round(j["leak_controlled"], 3)
            row[f"leak_other_{jn}"] = round(j["leak_other"], 3)
            row[f"leak_eyes_to_mouth_{jn}"] = round(j["leak"].get("eyes->mouth", float("nan")), 3)
            row[f"leak_size_controlled_{jn}"] = round(j["leak_size_controlled"], 3)
            row[f"leak_size_other_{jn}"] = round(j["leak_size_other"], 3)
            row[f"leak_size_eyes_to_mouth_{jn}"] = round(j["leak_size"].get("eyes->mouth", float("nan")), 3)
            if jn in oracle:            # the excess over the oracle's (the judges' own cross-talk)
                for part in ("controlled", "other"):
                    row[f"excess_leak_size_{part}_{jn}"] = round(j[f"leak_size_{part}"] - oracle[jn][f"leak_size_{part}"], 3)
        agree = r.get("agreement", {})
        if len(r["judges"]) > 1 and agree:
            row["passes_every_judge"] = agree["passes_every_judge"]
            row["cases_every_judge"] = agree["n_cases"]
            row["pass_share_gap"] = round(agree["pass_share_gap"], 2)
        row.update({"identity_spread": round(r["identity_spread"], 3), "samples_needed": r["samples_needed"],
                    "fit_seconds": round(r["fit_seconds"], 2), "edit_ms_per_image": round(r["edit_ms_per_image"], 2)})
        row.update({f"scale_{p}": float(f"{r['scales'][p]:.4g}") if p in r["scales"] else None for p in CONTROLLED})
        rows.append(row)
    df = pd.DataFrame(rows)
    key = "passes_evaluator" if "passes_evaluator" in df else None
    return df.sort_values(key, ascending=False, kind="stable") if key else df


def markdown(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |"
    rule = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule] + body)


def bar_chart(df: pd.DataFrame, path: Path, n_cases: int) -> None:
    cols = [c for c in df.columns if c.startswith("passes_")]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(df)), 4))
    width = 0.8 / max(len(cols), 1)
    for i, c in enumerate(cols):
        jn = c[len("passes_"):]
        cases = df[f"cases_{jn}"].fillna(n_cases) if f"cases_{jn}" in df else n_cases
        ax.bar([x + i * width for x in range(len(df))], 100.0 * df[c] / cases, width, label=jn)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(df))])
    ax.set_xticklabels(df["method"], rotation=30, ha="right")
    ax.set_ylabel("passing cases, % of those the judge read")
    ax.set_title("Direction leaderboard: passes per judge")
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


GAP = 0.25       # a pass-share gap between judges this large is called out in the report


def judge_notes(df: pd.DataFrame, n_cases: int) -> list[str]:
    """Report lines on the judges' agreement: which methods please one judge far more than another."""
    if "pass_share_gap" not in df:
        return []
    cases = {c[len("cases_"):]: int(df[c].dropna().max()) for c in df.columns
             if c.startswith("cases_") and c != "cases_every_judge" and df[c].notna().any()}
    lines = ["Judges' agreement: passes_every_judge counts the cases every judge passes (of the cases all of them "
             "read: " + ", ".join(f"{j} reads the first {k}" for j, k in cases.items()) + ")"
             if cases else "Judges' agreement: passes_every_judge counts the cases every judge passes",
             "; pass_share_gap is the highest minus the lowest judge's pass share."]
    split = df[df["pass_share_gap"] >= GAP]
    text = "".join(lines)
    if len(split):
        text += " Pleasing some judges far more than others (gap ≥ %.2f): " % GAP + ", ".join(
            f"{r.method} ({r.pass_share_gap:.2f})" for r in split.itertuples()) + "."
    else:
        text += f" No method's judges differ by a pass share of {GAP} or more."
    return [text, ""]


def write_outputs(out: Path, metrics: dict, completion: bool = True) -> None:
    """The board's files; ``completion`` False leaves ``metrics.json`` to the caller (written last,
    after the lineage record: ``pipeline.lineage.close_stage``)."""
    df = table(metrics)
    atomic_write_csv(out / "leaderboard.csv", df)
    n = metrics["settings"]["n_cases"]
    if len(df):
        bar_chart(df, out / "passes.png", n)
    lines = ["# Direction leaderboard", "",
             f"Generator: {metrics['generator']}. {n} seeded cases; α scaled per method so that α = ±1 moves "
             f"the property by {metrics['settings']['target_stds']} truth stds (the independent evaluator). "
             f"Judges: {', '.join(metrics['judges'])}"
             + "".join(f"; {k} {v}" for k, v in metrics["judge_notes"].items()) + ".",
             f"Run time {metrics['seconds']:.0f} s.", "", "![passes](passes.png)", "",
             markdown(df) if len(df) else "(no method finished)", "",
             *judge_notes(df, n),
             "Leak: mean |r| of α with the other controlled properties (controlled) or hair colour / length / "
             "background (other); over a 5-point α grid any steady drift gives |r| near 1, so leak_size is the "
             "readable one: the other property's move per move of the edited one, both in their spread over the "
             "unedited cases. excess_leak_size_* is a method's leak size minus the oracle's (the world's render "
             "with only the edited parameter moved: the judges' own cross-talk).", "", "## Case 0, α = −1 … +1 (rows eyes, mouth, pose)", ""]
    for name in df["method"] if len(df) else []:
        lines += [f"**{name}**", "", f"![{name}](methods/{name}/strip.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    if completion:
        atomic_write_json(out / "metrics.json", metrics)
