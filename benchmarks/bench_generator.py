"""Generator speed and memory on CPU: images/s and peak RSS per batch size.

Each measurement runs in a fresh process so that its peak RSS is its own.
    python benchmarks/bench_generator.py                 # 256 config at batch 1, 8, 32 (+ synthface)
    python benchmarks/bench_generator.py --batches 1 8 --config 256
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIGS = {
    "256": "celeba256",      # GenForce celeba-partial-256x256 architecture, random weights
    "synthface": "synthface",
}


def measure(config: str, batch: int, repeats: int, threads: int) -> dict:
    import torch

    from pipeline.profiles import load_profile
    from pipeline.runtime import peak_rss_mb
    from stylegan import GeneratorConfig, StyleGANGenerator
    from stylegan.sampling import generate

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    g = StyleGANGenerator(GeneratorConfig.from_dict(load_profile(CONFIGS[config])["generator"])).eval()
    z = torch.randn(batch, g.cfg.z_dim)
    generate(g, z)                                   # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        generate(g, z)
    dt = (time.perf_counter() - t) / repeats
    return {"config": config, "batch": batch, "threads": threads, "s_per_batch": dt,
            "images_per_s": batch / dt, "peak_rss_mb": peak_rss_mb()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", nargs="+", default=["256", "synthface"], choices=sorted(CONFIGS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", nargs=2, metavar=("CONFIG", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        b = int(args.one[1])
        print(json.dumps(measure(args.one[0], b, repeats=max(2, 32 // b), threads=args.threads)))
        return
    rows = []
    for cfg in args.config:
        for b in args.batches:
            out = subprocess.run([sys.executable, __file__, "--one", cfg, str(b), "--threads", str(args.threads)],
                                 check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"{'config':<10} {'batch':>5} {'threads':>7} {'s/batch':>9} {'images/s':>9} {'peak RSS MiB':>13}")
    for r in rows:
        print(f"{r['config']:<10} {r['batch']:>5} {r['threads']:>7} {r['s_per_batch']:>9.3f} "
              f"{r['images_per_s']:>9.2f} {r['peak_rss_mb']:>13.0f}")


if __name__ == "__main__":
    main()
