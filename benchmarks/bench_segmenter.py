"""The default parser (stage 3, the parsing judge) in NCHW against channels-last layout, interleaved.

    nice -n 10 python benchmarks/bench_segmenter.py --images <data root>/stage1/images --n 96 --threads 1

Parses the first ``--n`` PNGs of a folder (or random crops without ``--images``) as stage 3 does
(whole frame -> 224 crops, batches of 16), once with the shipped segmenter as loaded (NCHW) and once
after ``segmentation.synth_segmenter.for_inference`` (channels-last), alternately; prints the median
CPU seconds of each, their ratio, the 1-minute load, and how many class-map pixels differ.
"""
import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.io import read_png_rgb  # noqa: E402
from segmentation.synth_segmenter import for_inference, load_segmenter, parse_crops, whole_frame_crops  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default=None, help="a folder of PNGs (e.g. a data root's stage1/images)")
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--segmenter", default=str(ROOT / "synthface" / "weights" / "segmenter.pth"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.images:
        paths = sorted(Path(args.images).glob("*.png"))[:args.n]
        crops = whole_frame_crops(np.stack([read_png_rgb(p) for p in paths]))
    else:
        crops = np.random.default_rng(0).integers(0, 256, (args.n, 224, 224, 3), dtype=np.uint8)
    nchw = load_segmenter(args.segmenter)
    cl = for_inference(copy.deepcopy(nchw))
    models = {"nchw": nchw, "channels_last": cl}
    maps = {k: parse_crops(m, crops[:args.batch_size], args.batch_size) for k, m in models.items()}   # warm-up
    times = {k: [] for k in models}
    for _ in range(args.repeats):
        for k, m in models.items():
            t = time.process_time()
            maps[k] = parse_crops(m, crops, args.batch_size)
            times[k].append(time.process_time() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    diff = int((maps["nchw"] != maps["channels_last"]).sum())
    print(f"{len(crops)} crops, {args.threads} thread(s): NCHW {med['nchw']:.2f} CPU s, channels-last "
          f"{med['channels_last']:.2f} CPU s ({med['nchw'] / med['channels_last']:.2f}x); class-map pixels "
          f"differing {diff} of {maps['nchw'].size}; load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
