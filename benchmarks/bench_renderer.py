"""synthface renderer speed on one core: images/s (RGB + mask) at 64, 128 and 256 px.

    OMP_NUM_THREADS=1 python benchmarks/bench_renderer.py
    python benchmarks/bench_renderer.py --sizes 128 --n 2000

Parameters come from the world map P(z) (seeded), so the mix of faces (glasses, open
mouths, long hair, defects) is the one the pipeline renders. Single-threaded:
``OMP_NUM_THREADS=1`` is set before numpy is imported and ``cv2.setNumThreads(1)``.
"""
import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# imported after the thread variables above (numpy / OpenCV read them when they load)
import cv2  # noqa: E402

from synthface.renderer import render_batch  # noqa: E402
from synthface.truth import world as world_map  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--n", type=int, default=1000, help="images per size")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    cv2.setNumThreads(1)
    world = world_map(256, 0)
    params = world.truth(world.sample_z(args.n, seed=args.seed))
    t0 = time.perf_counter()
    world.truth(world.sample_z(args.n, seed=args.seed))
    t_truth = time.perf_counter() - t0
    print(f"world.truth: {args.n / t_truth:,.0f} parameter rows/s ({args.n} rows)")
    print(f"{'size':>6} {'images/s':>10} {'ms/image':>10}   (rgb + mask, 1 core, best of {args.repeats})")
    for size in args.sizes:
        render_batch(params.iloc[:20], size)                 # builds the per-size texture bank
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            render_batch(params, size)
            best = min(best, time.perf_counter() - t0)
        print(f"{size:>6} {args.n / best:>10,.0f} {1000 * best / args.n:>10.3f}")


if __name__ == "__main__":
    main()
