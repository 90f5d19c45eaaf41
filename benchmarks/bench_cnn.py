"""Seconds per epoch of the four stage-2 CNNs (short probes, extrapolated).

For each profile and property it times a few training batches (forward, BCE, backward,
AdamW step) and a few validation / scoring batches (eval mode, inference_mode), with the
profile's widths, padding, batch sizes and memory layout, then extrapolates to one epoch of
the spec's K-fold data (1,600 training + 400 validation images), to one fold (the profile's
``max_epochs``, if any) and to scoring 8,000 images with every fold model. Random inputs:
the speed of these nets does not depend on the pixels.

    python benchmarks/bench_cnn.py                           # synthface (128 px) and celeba256 (the spec's 256 px nets)
    python benchmarks/bench_cnn.py --profiles synthface --threads 2 --batches 5
    python benchmarks/bench_cnn.py --config 128:0.25:1       # ad hoc RES:WIDTH:PADDING, batch 16

Check ``uptime`` first: on a 2-core machine a busy neighbour process distorts every figure.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cnn.filter_cnns import PROPERTIES, count_parameters, to_unit_float  # noqa: E402
from cnn.kfold import FoldSettings, new_model  # noqa: E402
import run_cnn  # noqa: E402
from pipeline.config import constants, resolve  # noqa: E402
from pipeline.profiles import load_profile  # noqa: E402
from stages.filtering import fold_settings  # noqa: E402


def _time(fn, n: int) -> float:
    fn()                                    # warm-up (oneDNN primitive creation)
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def probe(s: FoldSettings, score_batch: int, n: int) -> dict:
    torch.manual_seed(0)
    model = new_model(s)
    fmt = torch.channels_last if s.channels_last else torch.contiguous_format
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr)
    loss_fn = torch.nn.BCELoss(reduction="sum")
    x8 = torch.randint(0, 256, (s.batch_size, 3, s.resolution, s.resolution), dtype=torch.uint8)
    y = (torch.rand(s.batch_size) > 0.5).float()
    xs8 = torch.randint(0, 256, (score_batch, 3, s.resolution, s.resolution), dtype=torch.uint8)

    def prep(x):
        return to_unit_float(model.crop_input(x)).contiguous(memory_format=fmt)

    def train_step():
        model.train()
        opt.zero_grad(set_to_none=True)
        loss_fn(model.forward_cropped(prep(x8)), y).backward()
        opt.step()

    def score_step():
        model.eval()
        with torch.inference_mode():
            model.forward_cropped(prep(xs8))

    t_train = _time(train_step, n) / s.batch_size
    t_score = _time(score_step, n) / score_batch
    epoch = 1600 * t_train + 400 * t_score
    return {"params": count_parameters(model), "flatten": model.info.flatten, "ms_train": 1e3 * t_train,
            "ms_score": 1e3 * t_score, "s_epoch": epoch, "s_fold": epoch * s.max_epochs if s.max_epochs else None,
            "s_score": 8000 * s.folds * t_score}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", default="synthface,celeba256")
    ap.add_argument("--config", action="append", default=None, help="RES:WIDTH:PADDING (repeatable), batch 16")
    ap.add_argument("--batches", type=int, default=3, help="timed batches per measurement (after one warm-up)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--props", default=",".join(PROPERTIES))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = []                                  # (label, prop -> FoldSettings, score batch)
    if args.config:
        for c in args.config:
            r, w, p = c.split(":")
            sets = {prop: FoldSettings(prop, lr=1e-4, threshold=1.0, cut=0.5, resolution=int(r), width=float(w),
                                       padding=int(p)) for prop in args.props.split(",")}
            rows.append((f"{r}px w{w} pad{p}", sets, 8))
    else:
        for name in args.profiles.split(","):
            prof = load_profile(name)
            values = resolve(constants(vars(run_cnn)), prof, "stage2", print_fn=None).values
            sets = {prop: fold_settings(values, prop, int(prof["resolution"])) for prop in args.props.split(",")}
            sb = int(values["score_batch_size"])
            rows.append((f"{name} ({prof['resolution']} px)", sets, sb))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average {load:.2f}")
    print("| config | CNN | width | params | ms/img train | ms/img score | s/epoch (1600+400) | s/fold | "
          "s scoring 8000 x folds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, sets, sb in rows:
        tot_fold = tot_score = 0.0
        for prop, s in sets.items():
            r = probe(s, sb, args.batches)
            tot_fold += (r["s_fold"] or 0.0) * s.folds
            tot_score += r["s_score"]
            width = list(s.width) if isinstance(s.width, tuple) else s.width
            fold = f"{r['s_fold']:.1f}" if r["s_fold"] else "(early stop)"
            print(f"| {label} b{s.batch_size} | {prop} | {width} | {r['params']:,} | {r['ms_train']:.2f} | "
                  f"{r['ms_score']:.2f} | {r['s_epoch']:.1f} | {fold} | {r['s_score']:.1f} |", flush=True)
        if tot_fold:
            print(f"| {label} | all folds, all CNNs | | | | | | {tot_fold:.0f} | {tot_score:.0f} |", flush=True)


if __name__ == "__main__":
    main()
