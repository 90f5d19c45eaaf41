"""FaceXFormer and MTCNN face-crop speed and memory on CPU (stage 3 of the celeba256 profile).

FaceXFormer rows: seconds per batch and per image of one forward (all heads, inference_mode,
eval, random weights — speed does not depend on the values) and the process's peak RSS.
The crop row: FaceCropper (MTCNN detect + margin + bicubic 224 crop) on a 256x256 real photo
(scikit-image's astronaut, downscaled), seconds per image. Each row runs in a fresh process so
its peak RSS is its own.

    python benchmarks/bench_facexformer.py                   # batch 1 and 4, 1 thread, plus the crop
    python benchmarks/bench_facexformer.py --batches 1 2 4 8 --threads 2

Check ``uptime`` first: on a 2-core machine a busy neighbour process distorts every figure.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _timed(fn, repeats: int) -> float:
    fn()                                              # warm-up (oneDNN primitive creation)
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def measure_parser(batch: int, repeats: int, threads: int) -> dict:
    import torch

    from pipeline.runtime import peak_rss_mb
    from segmentation.facexformer import FaceXFormer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = FaceXFormer().eval()
    x = torch.randn(batch, 3, 224, 224)

    def step():
        with torch.inference_mode():
            model(x)
    dt = _timed(step, repeats)
    return {"what": "FaceXFormer", "batch": batch, "threads": threads, "s_per_batch": dt,
            "s_per_image": dt / batch, "peak_rss_mb": peak_rss_mb()}


def measure_crop(batch: int, repeats: int, threads: int) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from pipeline.runtime import peak_rss_mb
    from segmentation.face_crop import FaceCropper

    torch.set_num_threads(threads)
    try:
        from skimage.data import astronaut
    except ImportError:
        sys.exit("the crop benchmark needs scikit-image (its astronaut photo)")
    image = np.asarray(Image.fromarray(astronaut()).resize((256, 256), Image.BICUBIC))
    cropper = FaceCropper(detect_batch_size=batch)
    images = [image] * batch
    dt = _timed(lambda: cropper.crop(images), repeats)
    return {"what": "MTCNN crop 256px", "batch": batch, "threads": threads, "s_per_batch": dt,
            "s_per_image": dt / batch, "peak_rss_mb": peak_rss_mb()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-crop", action="store_true", help="skip the MTCNN crop rows")
    ap.add_argument("--one", nargs=2, metavar=("WHAT", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        fn = measure_parser if args.one[0] == "parser" else measure_crop
        print(json.dumps(fn(int(args.one[1]), args.repeats, args.threads)))
        return
    jobs = [("parser", b) for b in args.batches] + ([] if args.no_crop else [("crop", b) for b in args.batches])
    rows = []
    for what, b in jobs:
        out = subprocess.run([sys.executable, __file__, "--one", what, str(b), "--threads", str(args.threads),
                              "--repeats", str(args.repeats)], check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"{'what':<18} {'batch':>5} {'threads':>7} {'s/batch':>9} {'s/image':>9} {'peak RSS MiB':>13}")
    for r in rows:
        print(f"{r['what']:<18} {r['batch']:>5} {r['threads']:>7} {r['s_per_batch']:>9.3f} "
              f"{r['s_per_image']:>9.3f} {r['peak_rss_mb']:>13.0f}")


if __name__ == "__main__":
    main()
