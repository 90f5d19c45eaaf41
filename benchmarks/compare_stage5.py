"""Compare the stage-5 outputs of two data roots (e.g. before / after a restructuring).

    python benchmarks/compare_stage5.py /work/wt/houseb_before/synthface /work/wt/houseb_after/synthface

Prints, then exits 1 when a figure differs:

1. the headline figures of each run (property CNN held-out r, v1 / v3 passes and mean r per judge,
   female share, identity and leak means, the oracle's), side by side;
2. every number of every ``stage5/*/metrics.json`` (flattened; timings, paths and memory left out)
   that differs;
3. the sha256 of every output file under ``stage5/`` (reports, metrics and run records aside):
   same, different, or present in one root only.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

RUNS = ("property_cnn", "v1", "v3", "final", "oracle")
# metric keys that measure the machine or the run, not the result
VOLATILE = ("seconds", "_s", "peak_rss_mb", "images_per_second", "distributed", "history_file", "checkpoint",
            "z_file", "label_file", "shipped", "notes", "timings", "train_s", "relabel_s", "total_s",
            "generator_source", "discriminator_source")
SKIP_FILES = ("metrics.json", "report.md", "run_config.json", "installed_from_shipped.json", "train_state.pth")
CONTROLLED = ("eyes", "mouth", "pose")


def flatten(d, prefix="") -> dict:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = d
    return out


def volatile(key: str) -> bool:
    parts = key.replace("[", ".").split(".")
    return any(p in VOLATILE or p.endswith(("_seconds", "seconds_per_step", "seconds_per_epoch")) for p in parts)


def metrics(root: Path, run: str) -> dict | None:
    p = root / "stage5" / run / "metrics.json"
    return json.loads(p.read_text()) if p.is_file() else None


def judges_of(m: dict | None, run: str) -> dict:
    if m is None:
        return {}
    test = {"v1": m.get("generation_test"), "v3": m.get("generation_test_best")}.get(run, m)
    return (test or {}).get("judges", {})


def headline(root: Path) -> dict:
    """The figures the acceptance names, by a readable key."""
    h = {}
    pc = metrics(root, "property_cnn")
    if pc:
        for p, v in pc["held_out_vs_stage4"].items():
            h[f"property CNN held-out r {p}"] = v["r"]
        for p, v in pc.get("held_out_vs_truth", {}).items():
            h[f"property CNN held-out r vs truth {p}"] = v
        if "shipped_install" in pc:
            h["property CNN shipped_install"] = json.dumps(pc["shipped_install"], sort_keys=True)
    for run in ("v1", "v3", "oracle"):
        m = metrics(root, run)
        for name, j in judges_of(m, run).items():
            h[f"{run} {name} passes"] = j["passes"]
            for p in CONTROLLED:
                h[f"{run} {name} mean r {p}"] = j["mean"][f"{p}_corr"]
            leak = j.get("leak_mean_abs_r") or {}
            ident = j.get("identity_mean_within_std") or {}
            if leak:
                h[f"{run} {name} leak mean |r| (mean)"] = sum(leak.values()) / len(leak)
            if ident:
                vals = [v for v in ident.values() if v is not None and not math.isnan(v)]
                h[f"{run} {name} identity within/across (mean)"] = sum(vals) / len(vals) if vals else None
        if m and run != "oracle":
            fem = m.get("female_share", {})
            for k, v in flatten(fem).items():
                if k.endswith(".share"):
                    h[f"{run} female share {k[:-len('.share')]}"] = v
    fin = metrics(root, "final")
    for r in (fin or {}).get("test", []):
        h[f"final {r['judge']} exact z passed"] = r["exact_z"]["passed"]
        h[f"final {r['judge']} noised passes"] = r["noised_passes"]
    return h


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files(root: Path) -> dict:
    base = root / "stage5"
    if not base.is_dir():
        return {}
    return {p.relative_to(base).as_posix(): p for p in sorted(base.rglob("*"))
            if p.is_file() and p.name not in SKIP_FILES and not p.name.endswith(".tmp")}


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", type=Path, help="data root (holding stage5/)")
    ap.add_argument("after", type=Path)
    args = ap.parse_args(argv)
    differ = 0

    ha, hb = headline(args.before), headline(args.after)
    print("== headline figures (before | after)")
    for k in sorted(set(ha) | set(hb), key=lambda k: (k.split()[0], k)):
        a, b = ha.get(k), hb.get(k)
        mark = "" if same(a, b) else "   <-- DIFFERS"
        differ += bool(mark)
        print(f"  {k}: {a} | {b}{mark}")

    print("\n== every metrics.json number (timings, paths, memory aside)")
    for run in RUNS:
        ma, mb = metrics(args.before, run), metrics(args.after, run)
        if ma is None or mb is None:
            print(f"  {run}: metrics.json {'missing before' if ma is None else ''}"
                  f"{' missing after' if mb is None else ''}")
            differ += (ma is None) != (mb is None)
            continue
        fa = {k: v for k, v in flatten(ma).items() if not volatile(k)}
        fb = {k: v for k, v in flatten(mb).items() if not volatile(k)}
        diff = sorted(k for k in set(fa) | set(fb) if not same(fa.get(k), fb.get(k)))
        print(f"  {run}: {len(fa)} values before, {len(fb)} after; {len(diff)} differ")
        for k in diff[:25]:
            print(f"    {k}: {fa.get(k, '<absent>')!r} | {fb.get(k, '<absent>')!r}")
        if len(diff) > 25:
            print(f"    ... and {len(diff) - 25} more")
        differ += len(diff)

    print("\n== sha256 of the output files under stage5/ (reports, metrics, run records aside)")
    fa, fb = files(args.before), files(args.after)
    both = sorted(set(fa) & set(fb))
    changed = [r for r in both if sha256(fa[r]) != sha256(fb[r])]
    only_a, only_b = sorted(set(fa) - set(fb)), sorted(set(fb) - set(fa))
    print(f"  {len(both)} files in both roots: {len(both) - len(changed)} identical, {len(changed)} differ")
    for r in changed:
        print(f"    differs: {r}")
    for name, rs in (("only before", only_a), ("only after", only_b)):
        if rs:
            print(f"  {name} ({len(rs)}): " + ", ".join(rs[:15]) + (" ..." if len(rs) > 15 else ""))
    print(f"\n{'SAME figures' if differ == 0 else f'{differ} figure(s) differ'}; "
          f"{len(changed)} output file(s) differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
