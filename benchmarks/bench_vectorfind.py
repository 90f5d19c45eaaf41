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
    python benchmarks/bench_vectorfind.py --skip-svm --skip-sampling --synthface 100 --synthface-cases 6 \
        --generator <data root>/stage6/v9/generator.pth            # the test's time split, before / after
    python benchmarks/bench_vectorfind.py --skip-svm --skip-sampling --svm-cache <data root>/stage7/samples

Check ``uptime`` first: on a 2-core machine a busy neighbour process distorts every figure.

Figures on the shipped synthface v9 (2026-12-06; the machine never idle: load 5–8 on the 2 cores):

* test, CPU-ms per image, 1 thread, property CNN + evaluator, JPEG (``--synthface 10
  --synthface-cases 4 --threads 1 --generator <v9>``, load 6): before 51.5 (synthesis 26 in calls of
  50, property CNN 11.5, evaluator 2 × 4.7, JPEG 0.8) = 10.8 images/s; after 30.3 = 16.4 images/s.
  Two intra-op threads at load 6–8: 108 CPU-ms per image (before). after vs after_2w: identical tables.
* test images/s in the stage (``--workers 2 --threads 1``, load 5–6): 16–20 (20 cases in 51–64 s).
* sampling (all three points from one image per sample, property CNN + evaluator hairstyle): 6.4
  samples/s per worker at load 5–6 (5.2 at load 8), two workers.
* under the heavy-job lock, load 1.4–1.7 (``--synthface 100 --synthface-cases 6 --threads 2``):
  sampling 32.6 / 40.3 / 41.4 images/s at w / mapping_split1 / mapping_split2; test before 35.0 images/s
  (55 CPU-ms), after 56.7 (2 torch threads), after_2w 44.3, after at 1 thread 26.7. In the stage
  (2 workers): the 100-case test in 92–99 s (about 52–55 images/s); sampling 44–54 samples/s.
* SVM: 48 fits at mapping_split2, n = 20K, 2.7 s (stage run, 1 thread); w / mapping_split1 at 20K
  (``--svm-cache``) not measured yet.
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


def bench_svm_cache(cache: str, n: int, points, judge: str = "property_cnn", median_n: int = 4000) -> list[dict]:
    """48 LinearSVC fits on the first n samples of a stage-7 sample cache (real mid vectors and scores,
    medians from the first ``median_n``), per point: what a stage-7 run pays after sampling."""
    from stages.vectorfind_samples import load_samples       # local: only this figure reads a cache
    from vectorfind.svm import fit_svm_from_samples
    med = Medians.from_scores(load_samples(Path(cache), median_n, "w", judge).scores)
    out = []
    for point in points:
        s = load_samples(Path(cache), n, point, judge)
        t = time.perf_counter()
        res = fit_svm_from_samples(s, med, seed=0)
        row = {"what": "svm_fit", "point": point, "dim": s.mid.shape[1], "n": n,
               "seconds_48_fits": round(time.perf_counter() - t, 1), "load": round(os.getloadavg()[0], 1),
               "accuracy": {p: round(a, 4) for p, a in res.accuracy.items()}}
        print(f"SVM (sample cache) {point:15s} dim {row['dim']:5d} n {n}: {row['seconds_48_fits']:6.1f} s for 48 fits, "
              f"acc {row['accuracy']} (load {row['load']})", flush=True)
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


class _EachJudgeOnItsOwn:
    """The test's scorer before ``evaluation.scorers.measure_once``: the property CNN asks the
    evaluator for hairstyle, then the evaluator measures the same images again (the old cost)."""

    def __init__(self, scorers: dict, primary: str):
        self.scorers, self.primary = scorers, primary

    def __call__(self, images):
        out = dict(self.scorers[self.primary](images))
        for name, s in self.scorers.items():
            if name != self.primary:
                out.update({f"{name}/{k}": v for k, v in s(images).items()})
        return out


def _timed(fn, log: dict, key: str):
    """Wrap ``fn`` so that its wall seconds add up in ``log[key]``."""
    def run(*a, **kw):
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            log[key] = log.get(key, 0.0) + time.perf_counter() - t
    return run


def _random_svm(gen, point: str, seed: int):
    from vectorfind.directions import DirectionSet      # local: only the synthface figures need it
    from vectorfind.groups import GROUP_ORDER
    rng = np.random.default_rng(seed)
    ds = DirectionSet(point)
    for p in ("eyes", "mouth", "pose"):
        for g in GROUP_ORDER:
            v = rng.standard_normal(gen.mid_dim(point)).astype(np.float32)
            ds.add(p, g, v / np.linalg.norm(v))
    return ds


def bench_synthface(n: int, cases: int, seed: int, generator: str = "shipped-v1", profile: str = "synthface",
                    judges=("property_cnn", "evaluator"), point: str = "mapping_split2",
                    configs=("before", "after", "after_2w")) -> list[dict]:
    """On the profile's v9 (``generator``: a checkpoint path or ``shipped-v1``): where the test's time
    goes (generator, JPEG, each judge; wall seconds), sampling images/s at each point, and the test's
    images/s (50 edited + 1 unedited per case) before and after the speed-up:

    * before: synthesis on the plain path in calls of 50 images, every judge measuring on its own
      (the evaluator twice: once for the property CNN's hairstyle);
    * after: the stage's defaults — exact path (bit-identical to plain at the same batch) in calls of
      10, each judge once per batch;
    * after_2w: as after, two cases at once in two threads of one torch thread each (``--workers 2``). The synthesis' last bits depend on the batch (about 3e-6 of the
      [-1, 1] range), so the two setups' scores may differ in their 4th decimal: printed.
    CPU seconds (the process's, both threads) are printed beside wall seconds: on a shared machine
    the CPU figure is the steadier one."""
    from pipeline.profiles import load_profile            # local: only these figures need the profile's models
    from stages.vectorfind import MultiScorer
    from stages.vectorfind_inputs import build_scorers, load_generator
    from vectorfind.cases import run_case
    from vectorfind.sampling import case_latents
    prof = load_profile(profile)
    from stages.vectorfind_samples import ordered_map
    setups = {"before": dict(image_batch=50, path="plain", multi=_EachJudgeOnItsOwn, workers=1),
              "after": dict(image_batch=10, path="exact", multi=MultiScorer, workers=1),
              "after_2w": dict(image_batch=10, path="exact", multi=MultiScorer, workers=2)}
    gens = {c: load_generator(prof, generator, None, 50, setups[c]["image_batch"], setups[c]["path"])[0]
            for c in configs}
    scorers, _ = build_scorers(prof, list(judges))
    out = []
    gen = gens[configs[-1]]
    for point_s in POINTS:
        sample(gen, scorers["property_cnn"], point_s, 10, seed=seed)                      # warm-up
        t = time.perf_counter()
        s = sample(gen, scorers["property_cnn"], point_s, n, seed=seed, batch_size=50)
        row = {"what": "sampling", "point": point_s, "n": n, "images_per_s": round(n / (time.perf_counter() - t), 1),
               "load": round(os.getloadavg()[0], 1)}
        print(f"synthface sampling {point_s:15s}: {row['images_per_s']:6.1f} images/s (property CNN + evaluator "
              f"hairstyle) load {row['load']}", flush=True)
        out.append(row)
    ds = _random_svm(gen, point, seed)
    z, label = case_latents(range(cases), gen.z_dim, gen.label_dim, seed)
    med = Medians.from_scores(s.scores)
    tables = {}
    for c in configs:
        g = gens[c]
        log = {}
        g.image_from_mid = _timed(g.image_from_mid, log, "generator")
        for j in judges:               # the scorer objects stay JudgeScorers (MultiScorer's memo); time their judges
            scorers[j].judge.measure = _timed(scorers[j].judge.measure, log, j)
        multi = setups[c]["multi"](scorers, "property_cnn")
        run_case(g, multi, point, "svm", 0, z[0], label[0], svm=ds, medians=med, scale=1.5, jpeg=True)   # warm-up
        log.clear()
        workers = setups[c]["workers"]          # ordered_map: one torch thread per worker
        t, cpu = time.perf_counter(), time.process_time()
        res = list(ordered_map(lambda i: run_case(g, multi, point, "svm", i, z[i], label[i], svm=ds, medians=med,
                                                  scale=1.5, jpeg=True), range(cases), workers))
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        for j in judges:
            del scorers[j].judge.measure               # back to the class's method
        tables[c] = [r.table for r in res]
        row = {"what": "test", "setup": c, "judges": list(judges), "cases": cases, "seconds": round(wall, 1),
               "cpu_seconds": round(cpu, 1), "cpu_ms_per_image": round(cpu / (cases * 51) * 1000, 1),
               "images_per_s": round(cases * 51 / wall, 1), "load": round(os.getloadavg()[0], 1),
               "split_s": {**{k: round(v, 1) for k, v in log.items()},          # summed over the workers
                           "rest (JPEG, apply, r)": round(wall - sum(log.values()), 1)},
               "minutes_for_100_cases": round(wall / cases * 100 / 60, 1)}
        print(f"synthface test {c:8s} ({'+'.join(judges)}, JPEG): {row['images_per_s']:6.1f} images/s, "
              f"100 cases in {row['minutes_for_100_cases']} min; wall s {row['split_s']} of {row['seconds']}; "
              f"{row['cpu_ms_per_image']} CPU-ms/image (load {row['load']})", flush=True)
        out.append(row)
    cols = [f"{p}_score" for p in ("eyes", "mouth", "pose")]
    names = list(tables)
    for x, y in zip(names, names[1:]):
        a, b = tables[x], tables[y]
        d = max(float((u[cols] - v[cols]).abs().to_numpy().max()) for u, v in zip(a, b))
        print(f"synthface test: {x} vs {y}: largest score difference {d:.4f} "
              f"({sum(u.equals(v) for u, v in zip(a, b))} of {len(a)} case tables identical)", flush=True)
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
    ap.add_argument("--svm-cache", default="", help="also: 48 SVM fits on this stage-7 sample cache (stage7/samples)")
    ap.add_argument("--svm-cache-n", type=int, default=20000)
    ap.add_argument("--generator", default="shipped-v1", help="v9 checkpoint for the synthface figures")
    ap.add_argument("--profile", default="synthface", help="profile (or copied profile file) of the synthface figures")
    ap.add_argument("--judges", default="property_cnn,evaluator", help="test judges of the synthface figures")
    ap.add_argument("--setups", default="before,after,after_2w", help="synthface test setups to time")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"load average {os.getloadavg()}, torch threads {a.threads}", flush=True)
    if not a.skip_svm:
        bench_svm(a.n, a.dims, a.seed)
    if not a.skip_sampling:
        bench_sampling(a.sampling_n, a.res, a.batch, a.seed)
    if a.svm_cache:
        bench_svm_cache(a.svm_cache, a.svm_cache_n, POINTS)
    if a.synthface:
        bench_synthface(a.synthface, a.synthface_cases, a.seed, a.generator, a.profile, tuple(a.judges.split(",")),
                        configs=tuple(a.setups.split(",")))


if __name__ == "__main__":
    main()
