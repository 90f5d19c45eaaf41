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
    python benchmarks/bench_vectorfind.py --skip-svm --skip-sampling --synthface 200   # stage 7 on synthface

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


def bench_synthface(n: int, cases: int, seed: int) -> list[dict]:
    """Sampling images/s at each point and test images/s on the synthface profile's v9 (made from the
    shipped FineTune-v1: stages/vectorfind_inputs), judged by the property CNN (+ evaluator hairstyle)."""
    from pipeline.profiles import load_profile            # local: only this figure needs the profile's models
    from stages.vectorfind import MultiScorer
    from stages.vectorfind_inputs import build_scorers, load_generator
    from vectorfind.cases import run_case
    from vectorfind.directions import DirectionSet
    from vectorfind.groups import GROUP_ORDER
    from vectorfind.sampling import case_latents
    prof = load_profile("synthface")
    gen, _ = load_generator(prof, "shipped-v1")
    scorers, _ = build_scorers(prof, ["property_cnn", "evaluator"])
    out = []
    for point in POINTS:
        sample(gen, scorers["property_cnn"], point, 10, seed=seed)                       # warm-up
        t = time.perf_counter()
        s = sample(gen, scorers["property_cnn"], point, n, seed=seed, batch_size=50)
        row = {"what": "sampling", "point": point, "n": n, "images_per_s": round(n / (time.perf_counter() - t), 1)}
        print(f"synthface sampling {point:15s}: {row['images_per_s']:6.1f} images/s (property CNN)", flush=True)
        out.append(row)
    rng = np.random.default_rng(seed)
    ds = DirectionSet("w")
    for p in ("eyes", "mouth", "pose"):
        for g in GROUP_ORDER:
            v = rng.standard_normal(gen.mid_dim("w")).astype(np.float32)
            ds.add(p, g, v / np.linalg.norm(v))
    z, label = case_latents(range(cases), gen.z_dim, gen.label_dim, seed)
    med = Medians.from_scores(s.scores)
    for judges in (["property_cnn"], ["property_cnn", "evaluator"]):
        sc = MultiScorer({j: scorers[j] for j in judges}, "property_cnn")
        t = time.perf_counter()
        for i in range(cases):
            run_case(gen, sc, "w", "svm", i, z[i], label[i], svm=ds, medians=med, scale=3.0, jpeg=True)
        row = {"what": "test", "judges": judges, "cases": cases,
               "images_per_s": round(cases * 51 / (time.perf_counter() - t), 1)}
        print(f"synthface test ({'+'.join(judges)}, JPEG): {row['images_per_s']:6.1f} images/s "
              f"(50 edited + 1 unedited per case)", flush=True)
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
    ap.add_argument("--synthface", type=int, default=0, help="also: N images per point on the synthface v9")
    ap.add_argument("--synthface-cases", type=int, default=4)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"load average {os.getloadavg()}, torch threads {a.threads}", flush=True)
    if not a.skip_svm:
        bench_svm(a.n, a.dims, a.seed)
    if not a.skip_sampling:
        bench_sampling(a.sampling_n, a.res, a.batch, a.seed)
    if a.synthface:
        bench_synthface(a.synthface, a.synthface_cases, a.seed)


if __name__ == "__main__":
    main()
