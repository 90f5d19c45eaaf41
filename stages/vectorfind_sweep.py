"""Stage 7's sweep: the issue's grid of (method, point, n[, α-scale multiplier]) runs, each a normal
stage-7 run (resumable: a finished run is read back), and one aggregate table
``<data root>/stage7/sweep/sweep_table.csv`` + ``sweep.md`` rewritten after every row."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from pipeline.io import atomic_write_csv
from pipeline.reports import markdown_table, plt, save_figure, write_report
from vectorfind.protocols import CONTROLLED


def parse_row(text: str) -> dict:
    """``method:point:n[:scale multiplier]``."""
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise ValueError(f"sweep row {text!r}: expected method:point:n[:scale multiplier]")
    return {"method": parts[0], "point": parts[1], "n": int(parts[2]), "mult": float(parts[3]) if len(parts) == 4 else 1.0}


def table_row(m: dict, mult: float) -> dict:
    q = m["quality"]
    row = {"method": m["method"], "point": m["point"], "n": m["n"], "alpha_scale": m["alpha_scale"],
           "scale_multiplier": mult, "conditional": bool(m["settings"].get("conditional", False)),
           "time_s": round(m["seconds"]["total"], 1),
           **{f"quality_{p}": round(q[p], 4) for p in CONTROLLED if p in q}}
    for j, s in m["judges"].items():
        row.update({f"{j}_abs_r_{p}": round(s["mean_abs_r"][p], 4) for p in CONTROLLED})
        row[f"{j}_passes"] = s["passes"]
    qa = m["qa"]
    row["qa_cases"] = qa["cases"]
    row["qa_re_passed"] = qa.get("re_passed", {}).get(m["fit_judge"], 0)
    return row


def curves(df: pd.DataFrame, path: Path) -> Path:
    """Passes (each judge) and summed mean |r| (fitting judge) against n, one line per (method, point, scale)."""
    judges = [c[:-len("_passes")] for c in df.columns if c.endswith("_passes")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for (method, point, scale), d in df.groupby(["method", "point", "alpha_scale"]):
        d = d.sort_values("n")
        for j in judges:
            axes[0].plot(d.n, d[f"{j}_passes"], marker="o", label=f"{method} {point} x{scale:g} ({j})")
        j0 = judges[0]
        axes[1].plot(d.n, sum(d[f"{j0}_abs_r_{p}"] for p in CONTROLLED), marker="o", label=f"{method} {point} x{scale:g}")
    axes[0].set(xscale="log", xlabel="n", ylabel="passes of the cases", title="passes")
    axes[1].set(xscale="log", xlabel="n", ylabel="sum of mean |r|", title=f"mean |r| ({judges[0] if judges else ''})")
    for ax in axes:
        ax.legend(fontsize=6)
    return save_figure(fig, path)


def run_sweep(profile, cfg: dict, run_one, progress: bool = True) -> dict:
    out = profile.data_root / "stage7" / "sweep"
    rows, t0 = [], time.perf_counter()
    for text in cfg["sweep_rows"]:
        r = parse_row(text)
        c = dict(cfg, method=r["method"], point=r["point"], n=r["n"], alpha_scale=cfg["alpha_scale"] * r["mult"])
        if progress:
            print(f"sweep row {text} (α scale {c['alpha_scale']:g})", flush=True)
        m = run_one(profile, c, progress=progress)
        rows.append(table_row(m, r["mult"]))
        df = pd.DataFrame(rows)
        atomic_write_csv(Path(out) / "sweep_table.csv", df, float_format="%.4f")
        fig = curves(df, Path(out) / "curves.png")
        write_report(out, "Stage 7 sweep", [("Rows", markdown_table(list(df.columns), df.values.tolist())),
                                            ("Pass rate and mean |r| against n", f"![curves]({fig.name})")])
    return {"rows": rows, "seconds": time.perf_counter() - t0}
