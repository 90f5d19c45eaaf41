"""Wall time of `make demo`'s stage commands, one row per command, with the load average beside it.

Reads the commands of the Makefile's ``demo`` target (so the table always times what the demo
runs), runs them in order in a checkout (``--repo``, default: this one) whose data root should be
fresh, and prints a markdown table. Stop after a given script with ``--until`` (default: the last
stage-5 command, ``run_fine_tuned_generator.py``; issue 21's "stages 1-5").

    python benchmarks/bench_demo.py --repo /tmp/clone                    # stages 1-5
    python benchmarks/bench_demo.py --repo /tmp/clone --until run_vectorfind_v9.py --json t.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def demo_commands(makefile: Path, profile: str) -> list[str]:
    """The shell commands of the ``demo`` target, ``$(VPY)`` / ``$(PROFILE)`` / ``$(VF_GENERATOR)`` filled."""
    text = makefile.read_text()
    var = dict(re.findall(r"^(\w+)\s*\??:?=\s*(.*?)\s*$", text, re.M))
    m = re.search(r"^demo:.*?\n((?:\t.*\n?)+)", text, re.M)
    if not m:
        raise SystemExit(f"{makefile}: no demo target")
    subst = {"VPY": ".venv/bin/python", "PROFILE": profile, "VF_GENERATOR": var.get("VF_GENERATOR", "")}
    return [re.sub(r"\$\((\w+)\)", lambda v: subst.get(v.group(1), var.get(v.group(1), "")), line.strip())
            for line in m.group(1).splitlines() if line.strip()]


def _child_cpu() -> float:
    """User + system CPU seconds of the finished child processes so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", default=str(ROOT), help="checkout to run in (its .venv and Makefile)")
    ap.add_argument("--profile", default="synthface")
    ap.add_argument("--until", default="run_fine_tuned_generator.py", help="last script to run")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    repo = Path(args.repo).resolve()
    cmds = demo_commands(repo / "Makefile", args.profile)
    rows, t_all = [], time.perf_counter()
    for cmd in cmds:
        l0, t, c0 = load(), time.perf_counter(), _child_cpu()
        proc = subprocess.run(cmd, shell=True, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        row = {"command": cmd, "seconds": round(time.perf_counter() - t, 1), "cpu_seconds": round(_child_cpu() - c0, 1),
               "load_start": l0, "load_end": load(), "exit": proc.returncode,
               "tail": proc.stdout.strip().splitlines()[-3:]}
        rows.append(row)
        print(f"{row['seconds']:8.1f} s  CPU {row['cpu_seconds']:7.1f} s  load {l0} -> {row['load_end']}  "
              f"exit {proc.returncode}  {cmd}", flush=True)
        if proc.returncode != 0:
            print(proc.stdout[-4000:], file=sys.stderr)
            break
        if args.until and args.until in cmd:
            break
    total = time.perf_counter() - t_all
    print("\n| command | wall | CPU s (user + sys) | load (1-min, start -> end) |\n|---|---|---|---|")
    for r in rows:
        m, s = divmod(r["seconds"], 60)
        print(f"| `{r['command'].split(' --profile')[0].replace('.venv/bin/python ', '')}` | {int(m)} min {s:04.1f} s "
              f"| {r['cpu_seconds']} | {r['load_start']} -> {r['load_end']} |")
    print(f"| total | {int(total // 60)} min {total % 60:04.1f} s | {sum(r['cpu_seconds'] for r in rows):.1f} | |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "total_seconds": round(total, 1)}, indent=1))
    return rows


if __name__ == "__main__":
    main()
