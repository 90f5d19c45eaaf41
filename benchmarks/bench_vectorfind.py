"""VectorFind speed: SVM fitting (48 LinearSVCs) at n samples per mid-vector dimension, and
sampling images/s at each extraction point on the tiny test generator.

Synthetic SVM data: mid vectors N(0, I) scaled like a w vector; eyes / mouth / pose scores are
linear in three fixed directions plus noise; the four group properties are other linear
read-outs, so the 16 groups are balanced as in a real run. The SVM figures (liblinear, single
thread) are what a stage pays after sampling; sampling speed depends on the generator, so the
tiny generator's figure only measures the package's own overhead (batching, uint8, scorer
input, JPEG).

    python benchmarks/bench_vectorfind.py                         # n 20K, dims 512 1536 2560
    python benchmarks/bench_vectorfind.py --n 4000 --dims 512 --sampling-n 2000

Check ``uptime`` first: on a 2-core machine a busy neighbour process distorts every figure.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.vectorfind_tiny import TinyMidGenerator, TinyScorer  # noqa: E402
from vectorfind.groups import Medians, group_counts, group_names  # noqa: E402
from vectorfind.protocols import GROUP_PROPERTIES, POINTS  # noqa: E402
from vectorfind.sampling import sample  # noqa: E402
from vectorfind.svm import fit_svm_directions  # noqa: E402


def synthetic(n: int, dim: int, seed: int = 0):
    rng = np.random.default_rng([seed, dim])
    mid = (rng.standard_normal((n, dim)) * 0.5).astype(np.float32)
    read = rng.standard_normal((dim, 7)) / np.sqrt(dim) * 2
    lin = mid.astype(np.float64) @ read
    noise = rng.standard_normal(lin.shape) * 0.5
    names = ("eyes", "mouth", "pose") + GROUP_PROPERTIES
    scores = {p: (lin[:, i] + noise[:, i]).astype(np.float32) for i, p in enumerate(names)}
    return mid, scores


def bench_svm(n: int, dims, seed: int) -> list[dict]:
    out = []
    for dim in dims:
        mid, scores = synthetic(n, dim, seed)
        groups = group_names(scores, Medians.from_scores(scores))
        t = time.perf_counter()
        res = fit_svm_directions(mid, scores, groups, "w", seed=seed)
        sec = time.perf_counter() - t
        row = {"dim": dim, "n": n, "seconds_48_fits": round(sec, 2), "seconds_per_fit": round(sec / 48, 3),
               "accuracy": {p: round(a, 4) for p, a in res.accuracy.items()},
               "unconverged": res.meta["unconverged"], "smallest_group": min(group_counts(groups).values())}
        print(f"SVM  dim {dim:5d}  n {n}: {row['seconds_48_fits']:7.2f} s for 48 fits "
              f"({row['seconds_per_fit']:.3f} s each), acc {row['accuracy']}, unconverged {row['unconverged']}/48",
              flush=True)
        out.append(row)
    return out


def bench_sampling(n: int, res: int, batch: int, seed: int) -> list[dict]:
    gen = TinyMidGenerator(res=res)
    sc = TinyScorer(gen)
    out = []
    for point in POINTS:
        for jpeg in (False, True):
            sample(gen, sc, point, batch, seed=seed, batch_size=batch, jpeg=jpeg)      # warm-up
            t = time.perf_counter()
            s = sample(gen, sc, point, n, seed=seed, batch_size=batch, jpeg=jpeg)
            sec = time.perf_counter() - t
            row = {"point": point, "jpeg": jpeg, "n": len(s), "res": res, "images_per_s": round(len(s) / sec, 1)}
            print(f"sampling  {point:15s} res {res} jpeg {str(jpeg):5s}: {row['images_per_s']:9.1f} images/s", flush=True)
            out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="samples for the SVM fits")
    ap.add_argument("--dims", type=int, nargs="+", default=[512, 1536, 2560])
    ap.add_argument("--sampling-n", type=int, default=4000)
    ap.add_argument("--res", type=int, default=64, help="tiny generator image size for the sampling figure")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-svm", action="store_true")
    ap.add_argument("--skip-sampling", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"load average {os.getloadavg()}, torch threads {a.threads}", flush=True)
    if not a.skip_svm:
        bench_svm(a.n, a.dims, a.seed)
    if not a.skip_sampling:
        bench_sampling(a.sampling_n, a.res, a.batch, a.seed)


if __name__ == "__main__":
    main()
