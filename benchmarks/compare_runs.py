"""Compare the outputs of two runs of the pipeline, file by file (behaviour-unchanged check).

    python benchmarks/compare_runs.py A B [--ignore GLOB ...] [--stages stage1,stage2,...]

A and B are data roots (a profile's folder such as ``runs/synthface``, or the parent holding it:
the one profile folder inside is used when both hold exactly one). Every CSV, PNG, checkpoint
(``.pt`` / ``.pth`` / ``.ckpt``) and JSON file under them is compared:

* PNG and checkpoints: SHA-256 of the bytes;
* CSV: SHA-256 of the bytes; if those differ, the file counts as identical when it is equal with
  its timing columns (``elapsed``, ``time``, ``seconds``, ...) left out, and is listed as such;
* JSON: parsed, with timing fields (``timings``, ``*_s``, ``seconds``, ``*per_s``, ``peak_rss_mb``,
  ``threads``, ...) dropped and the two roots' absolute paths replaced by ``<root>``.

Prints one table row per stage folder (identical / differing / only in A / only in B / ignored) and
the names of the files that differ; exits 1 on any difference (ignored files aside), else 0.
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd

BINARY = {".png", ".pt", ".pth", ".ckpt"}
KINDS = BINARY | {".csv", ".json"}
TIMING_KEY = re.compile(r"(^|_)(timings?|seconds|elapsed|wall|time)(_|$)|_s$|_per_s$|per_image$|^peak_rss|^threads$"
                        r"|^images_per_s$|^throughput$|^last_run$", re.I)
TIMING_COLUMN = re.compile(r"elapsed|seconds|\btime\b|\(s\)|_s$", re.I)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _strip(value, roots: tuple[str, ...]):
    if isinstance(value, dict):
        return {k: _strip(v, roots) for k, v in value.items() if not TIMING_KEY.search(str(k))}
    if isinstance(value, list):
        return [_strip(v, roots) for v in value]
    if isinstance(value, str):
        for r in roots:
            value = value.replace(r, "<root>")
        return value
    return value


def json_canonical(path: Path, root: Path) -> str:
    data = json.loads(path.read_text())
    roots = tuple(sorted({str(root), str(root.resolve())}, key=len, reverse=True))
    return json.dumps(_strip(data, roots), sort_keys=True)


def csv_without_timing(path: Path) -> tuple[str, list[str]]:
    df = pd.read_csv(io.StringIO(path.read_text()), dtype=str, keep_default_na=False)
    drop = [c for c in df.columns if TIMING_COLUMN.search(str(c))]
    return df.drop(columns=drop).to_csv(index=False), drop


def data_root(path: Path) -> Path:
    """The profile folder: ``path`` itself if it holds stage folders, else its one sub-folder that does."""
    path = Path(path)
    if any(p.is_dir() and p.name.startswith("stage") for p in path.iterdir()):
        return path
    subs = [p for p in path.iterdir() if p.is_dir() and any(q.name.startswith("stage") for q in p.iterdir()
                                                              if q.is_dir())]
    if len(subs) != 1:
        raise SystemExit(f"{path}: expected stage folders or exactly one profile folder holding them")
    return subs[0]


def files_of(root: Path, stages: set[str] | None) -> dict[str, Path]:
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and p.suffix.lower() in KINDS:
            rel = p.relative_to(root).as_posix()
            if stages is None or rel.split("/", 1)[0] in stages:
                out[rel] = p
    return out


def compare_file(rel: str, a: Path, b: Path, root_a: Path, root_b: Path) -> tuple[bool, str]:
    ext = a.suffix.lower()
    if sha256(a) == sha256(b):
        return True, ""
    if ext == ".json":
        try:
            same = json_canonical(a, root_a) == json_canonical(b, root_b)
        except (json.JSONDecodeError, UnicodeDecodeError):
            same = False
        return same, "equal with timings and roots aside" if same else "json differs"
    if ext == ".csv":
        (ta, drop), (tb, _) = csv_without_timing(a), csv_without_timing(b)
        if drop and ta == tb:
            return True, f"equal with timing column(s) {', '.join(drop)} aside"
        return False, "csv differs"
    return False, "bytes differ"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--ignore", action="append", default=[], help="glob of relative paths to leave out (repeatable)")
    ap.add_argument("--stages", default=None, help="comma-separated stage folders to compare (default: all)")
    ap.add_argument("--list", type=int, default=20, help="differing files to name per stage")
    args = ap.parse_args(argv)
    root_a, root_b = data_root(Path(args.a)), data_root(Path(args.b))
    stages = set(args.stages.split(",")) if args.stages else None
    fa, fb = files_of(root_a, stages), files_of(root_b, stages)
    rows = defaultdict(lambda: {"identical": 0, "differing": 0, "only_a": 0, "only_b": 0, "ignored": 0})
    named = defaultdict(list)
    notes = []
    for rel in sorted(set(fa) | set(fb)):
        stage = rel.split("/", 1)[0] if "/" in rel else "(top)"
        r = rows[stage]
        if any(fnmatch.fnmatch(rel, g) for g in args.ignore):
            r["ignored"] += 1
            continue
        if rel not in fb:
            r["only_a"] += 1
            named[stage].append(f"only in A: {rel}")
        elif rel not in fa:
            r["only_b"] += 1
            named[stage].append(f"only in B: {rel}")
        else:
            same, why = compare_file(rel, fa[rel], fb[rel], root_a, root_b)
            if same:
                r["identical"] += 1
                if why:
                    notes.append(f"{rel}: {why}")
            else:
                r["differing"] += 1
                named[stage].append(f"differs ({why}): {rel}")
    print(f"A = {root_a}\nB = {root_b}\n")
    print("| stage | identical | differing | only in A | only in B | ignored |")
    print("|---|---:|---:|---:|---:|---:|")
    total = {"identical": 0, "differing": 0, "only_a": 0, "only_b": 0, "ignored": 0}
    for stage in sorted(rows):
        r = rows[stage]
        print(f"| {stage} | {r['identical']} | {r['differing']} | {r['only_a']} | {r['only_b']} | {r['ignored']} |")
        for k in total:
            total[k] += r[k]
    print(f"| all | {total['identical']} | {total['differing']} | {total['only_a']} | {total['only_b']} "
          f"| {total['ignored']} |")
    if notes:
        print("\nIdentical apart from timing (JSON timing fields / absolute roots, CSV timing columns):")
        for n in notes[:args.list * 3]:
            print(f"  {n}")
        if len(notes) > args.list * 3:
            print(f"  … and {len(notes) - args.list * 3} more")
    bad = total["differing"] + total["only_a"] + total["only_b"]
    for stage in sorted(named):
        print(f"\n{stage}:")
        for line in named[stage][:args.list]:
            print(f"  {line}")
        if len(named[stage]) > args.list:
            print(f"  … and {len(named[stage]) - args.list} more")
    print("\nRESULT: " + ("identical" if not bad else f"{bad} file(s) differ or are missing"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
