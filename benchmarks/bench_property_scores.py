"""Stage-4 property-score speed on one core: images/s on 224x224 parsing maps.

    OMP_NUM_THREADS=1 python benchmarks/bench_property_scores.py
    python benchmarks/bench_property_scores.py --n 2000 --batch-sizes 16 64 256

The maps are the exact masks of rendered synthface concept faces (128 px frames resized to
224 with nearest neighbour, the colour crop bicubic), i.e. what stage 4 sees. Rows: the 2nd
algorithm's seven properties (the target is >= 1,000 images/s), the same plus hairstyle, the
1st algorithm, and each 2nd-algorithm part alone. Arrays are in memory (PNG decoding is not
included; stage 4's metrics.json reports its own end-to-end figure). One thread: the BLAS /
OpenMP thread variables are pinned to 1 before numpy loads, and OpenCV gets setNumThreads(1).
"""
import argparse
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# imported after the thread variables above (numpy / OpenCV read them when they load)
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from segmentation import property_scores as ps  # noqa: E402
from synthface.renderer import render_batch  # noqa: E402
from synthface.truth import world as world_map  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024, help="maps")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    cv2.setNumThreads(1)
    world = world_map(256, 0)
    t = world.truth(world.sample_z(4 * args.n, seed=args.seed))
    t = t[t.concept == 1].reset_index(drop=True)
    reps = int(np.ceil(args.n / len(t)))
    t = t.iloc[np.tile(np.arange(len(t)), reps)[:args.n]]
    rgb, mask = render_batch(t, 128)
    S = 224
    maps = np.stack([cv2.resize(m, (S, S), interpolation=cv2.INTER_NEAREST) for m in mask])
    imgs = np.stack([cv2.resize(a, (S, S), interpolation=cv2.INTER_CUBIC) for a in rgb])
    geom = ps.Geometry(S)

    def parts(m, im):
        cs = ps.channel_sum(im)
        hair = m == ps.HAIR
        return {"eyes + pose": lambda: ps.eyes_pose_v2(m, geom), "hair colour": lambda: ps.hair_color_v2(hair, cs),
                "hair length": lambda: ps.hair_length_v2(hair, geom), "mouth": lambda: ps.mouth_v2(ps._class_counts(m)),
                "background": lambda: ps.background(m, cs, geom), "hairstyle": lambda: ps.hairstyle(m, cs, geom)}

    rows = {"v2, 7 properties": lambda m, im: ps.scores_v2(m, im, with_hairstyle=False),
            "v2 + hairstyle": lambda m, im: ps.scores_v2(m, im),
            "v1, 7 properties": lambda m, im: ps.scores_v1(m, im)}
    print(f"{args.n} maps {S}x{S}, 1 core, best of {args.repeats}")
    print(f"{'what':<22} {'batch':>6} {'images/s':>10} {'ms/image':>10}")
    for bs in args.batch_sizes:
        for name, f in rows.items():
            best = float("inf")
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                for s in range(0, args.n, bs):
                    f(maps[s:s + bs], imgs[s:s + bs])
                best = min(best, time.perf_counter() - t0)
            print(f"{name:<22} {bs:>6} {args.n / best:>10,.0f} {1000 * best / args.n:>10.3f}")
    bs = args.batch_sizes[min(1, len(args.batch_sizes) - 1)]
    for name in parts(maps[:1], imgs[:1]):
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for s in range(0, args.n, bs):
                parts(maps[s:s + bs], imgs[s:s + bs])[name]()
            best = min(best, time.perf_counter() - t0)
        print(f"  part: {name:<14} {bs:>6} {args.n / best:>10,.0f} {1000 * best / args.n:>10.3f}")


if __name__ == "__main__":
    main()
