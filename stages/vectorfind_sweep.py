"""Stage 7's sweep: the issue's grid of (method, point, n[, α-scale multiplier]) runs, each a normal
stage-7 run (resumable: a finished run is read back), and one aggregate table
``<data root>/stage7/sweep/sweep_table.csv`` + ``sweep.md`` rewritten after every row."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from pipeline.io import atomic_write_csv
from pipeline.reports import markdown_table, write_report
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
           "scale_multiplier": mult, "time_s": round(m["seconds"]["total"], 1),
           **{f"quality_{p}": round(q[p], 4) for p in CONTROLLED if p in q}}
    for j, s in m["judges"].items():
        row.update({f"{j}_abs_r_{p}": round(s["mean_abs_r"][p], 4) for p in CONTROLLED})
        row[f"{j}_passes"] = s["passes"]
    qa = m["qa"]
    row["qa_cases"] = qa["cases"]
    row["qa_re_passed"] = qa.get("re_passed", {}).get(m["fit_judge"], 0)
    return row


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
        write_report(out, "Stage 7 sweep", [("Rows", markdown_table(list(df.columns), df.values.tolist()))])
    return {"rows": rows, "seconds": time.perf_counter() - t0}
