"""Does a stage-1 image depend on torch's thread count? Renders the same images under 1 and 2
threads (stage 1's own code path) and counts the images that differ and by how much.

    python benchmarks/bench_threads.py --profile synthface --num-images 24
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.profiles import load_profile  # noqa: E402
from stages.sampling import SamplingSettings, run_sampling  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="synthface")
    ap.add_argument("--num-images", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args(argv)
    prof = load_profile(args.profile)
    with tempfile.TemporaryDirectory() as tmp:
        outs = {}
        for t in (1, 2):
            torch.set_num_threads(t)
            outs[t] = Path(tmp) / f"threads{t}"
            run_sampling(prof, SamplingSettings(num_images=args.num_images, batch_size=args.batch_size),
                         out_dir=outs[t], show_progress=False)
        differ, worst = 0, 0
        for n in range(args.num_images):
            a, b = (cv2.imread(str(outs[t] / "images" / f"{n:06d}.png")).astype(int) for t in (1, 2))
            if not np.array_equal(a, b):
                differ += 1
                worst = max(worst, int(np.abs(a - b).max()))
    print(f"{args.profile}: {args.num_images} images, 1 vs 2 threads: {differ} differ, max |diff| {worst} grey levels")
    return {"differ": differ, "max_abs_diff": worst}


if __name__ == "__main__":
    main()
