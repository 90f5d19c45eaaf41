"""Generator speed on CPU: the plain path (GenForce's computation) against the fast paths.

All paths run in ONE process on the same weights, interleaved (plain, exact, relaxed,
plain, ...), so machine load hits them alike; each figure is the median of the repeats
and the 1-minute load average is printed beside it (read figures taken at load > cores
with care). Peak RSS is measured separately, one fresh process per (config, batch, path).

    nice -n 10 python benchmarks/bench_generator.py                      # 256 + synthface, batch 1 and 8, 1, 2 and N threads
    nice -n 10 python benchmarks/bench_generator.py --config 256 --batches 1 8 --threads 1
    python benchmarks/bench_generator.py --paths plain exact relaxed compiled   # + torch.compile (slow first call)
    python benchmarks/bench_generator.py --no-memory --sampler           # + the sampler (generate) rows
    nice -n 10 python benchmarks/bench_generator.py --kernels --batches 1 8 --threads 1   # per-layer kernel A/B

Configurations: ``256`` is the GenForce celeba-partial-256x256 architecture (profile
``celeba256`` sizes) with a fixed random initialisation; ``synthface`` is the shipped
synthface generator (128 px). Timed: mapping + truncation + synthesis (``g(z, plan=...)``)
under ``torch.inference_mode``.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PATHS = ("plain", "exact", "relaxed", "compiled")


def load_generator(config: str):
    import torch

    from pipeline.profiles import load_profile
    from stylegan import GeneratorConfig, StyleGANGenerator
    from stylegan.sampling import build_generator

    if config == "synthface":
        return build_generator(load_profile("synthface"))
    if config == "256":
        with torch.random.fork_rng():
            torch.manual_seed(0)
            g = StyleGANGenerator(GeneratorConfig.from_dict(load_profile("celeba256")["generator"]))
        return g.eval().requires_grad_(False)
    raise ValueError(f"unknown config {config!r}")


def plan_of(path: str):
    from stylegan.generator import PLAIN, InferencePlan

    if path == "plain":
        return PLAIN                               # not None: None is the model's default (exact) plan
    if path == "compiled":
        return InferencePlan(path="relaxed", compile=True)
    return InferencePlan(path=path)


def load1() -> float:
    return os.getloadavg()[0]


def time_paths(g, batch: int, paths, repeats: int) -> tuple[dict, dict]:
    """Median wall and CPU (process, all threads) seconds per call of each path, interleaved; the
    first call of each is a warm-up. On a loaded machine the CPU seconds are the steadier figure."""
    import torch

    z = torch.randn(batch, g.cfg.z_dim, generator=torch.Generator().manual_seed(batch))
    plans = {p: plan_of(p) for p in paths}
    times = {p: [] for p in paths}
    cpu = {p: [] for p in paths}
    with torch.inference_mode():
        for p in paths:
            g(z, plan=plans[p])
        for _ in range(repeats):
            for p in paths:
                c, t = time.process_time(), time.perf_counter()
                g(z, plan=plans[p])
                times[p].append(time.perf_counter() - t)
                cpu[p].append(time.process_time() - c)
    return ({p: statistics.median(v) for p, v in times.items()}, {p: statistics.median(v) for p, v in cpu.items()})


def time_sampler(g, batch: int, paths, repeats: int) -> dict:
    """The sampler (``stylegan.sampling.generate``) as stage 1 calls it; plain = one call per
    request (micro_batch 0, today's stage 1), exact / relaxed in padded micro-batches of 8
    (``DETERMINISTIC`` and its relaxed twin: batch-size independent images; a request of
    one image then pays for 8)."""
    import torch

    from stylegan.generator import PLAIN
    from stylegan.sampling import generate

    z = torch.randn(batch, g.cfg.z_dim, generator=torch.Generator().manual_seed(batch))
    plans = {p: (PLAIN if p == "plain" else plan_of(p)) for p in paths}
    times = {p: [] for p in paths}
    for p in paths:
        generate(g, z, plan=plans[p])
    for _ in range(repeats):
        for p in paths:
            t = time.perf_counter()
            generate(g, z, plan=plans[p])
            times[p].append(time.perf_counter() - t)
    return {p: statistics.median(v) for p, v in times.items()}


def peak_memory(config: str, batch: int, path: str, threads: int) -> float:
    """Peak RSS (MiB) of a fresh process that builds the generator and runs two calls."""
    out = subprocess.run([sys.executable, __file__, "--one", config, str(batch), path, "--threads", str(threads)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_mb"]


def vm_hwm_mb() -> float:
    """Peak RSS of this process image (VmHWM). Not getrusage: on Linux ru_maxrss carries the
    parent's peak across fork + exec, so a child of a big benchmark process reports the parent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    from pipeline.runtime import peak_rss_mb
    return peak_rss_mb()


def one(config: str, batch: int, path: str, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    g = load_generator(config)
    z = torch.randn(batch, g.cfg.z_dim)
    with torch.inference_mode():
        for _ in range(2):
            g(z, plan=plan_of(path))
    print(json.dumps({"peak_rss_mb": vm_hwm_mb()}))


def kernel_ab(config: str, batch: int, repeats: int = 5) -> list[dict]:
    """Per layer of ``config``: the relaxed path's candidate kernels, interleaved, median CPU ms
    (process time: steadier than wall time on a shared machine). These figures set
    ``WINOGRAD_MIN_CHANNELS`` / ``WINOGRAD_MIN_TILES`` / ``UPCONV_MIN_CHANNELS`` / ``STRIP_VALUES``
    in stylegan.kernels."""
    import torch
    import torch.nn.functional as F

    from stylegan.kernels import _UP_G, _WINO_G, _transform_weight, conv3x3_winograd, upconv_relaxed
    from stylegan.layers import SynthesisLayer

    cl = torch.channels_last
    g = load_generator(config)
    rows = []
    with torch.inference_mode():
        for i in range(1, g.num_layers):
            layer: SynthesisLayer = getattr(g.synthesis, f"layer{i}")
            res = layer.apply_noise.resolution
            cin, cout = layer.weight.shape[1], layer.weight.shape[0]
            rin = res if layer.kind == "conv" else res // 2
            x = torch.randn(batch, cin, rin, rin).contiguous(memory_format=cl)
            w = layer.weight * layer.scale
            if layer.kind == "conv":
                wcl, u = w.contiguous(memory_format=cl), _transform_weight(w, _WINO_G)
                fns = {"direct": lambda: F.conv2d(x, wcl, padding=1), "winograd": lambda: conv3x3_winograd(x, u)}
            else:
                wf = w.flip(2, 3) if layer.kind == "up_fused" else w
                u = _transform_weight(wf, _UP_G)
                wt = layer._fused_up_weight(None if layer.kind == "up_fused" else w.flip(2, 3)).contiguous(memory_format=cl)
                fns = {"transposed": lambda: F.conv_transpose2d(x, wt, stride=2, padding=1),
                       "9-product": lambda: upconv_relaxed(x, u)}
            times = {k: [] for k in fns}
            for f in fns.values():
                f()
            for _ in range(repeats):
                for k, f in fns.items():
                    t = time.process_time()
                    f()
                    times[k].append(1000 * (time.process_time() - t))
            rows.append({"config": config, "batch": batch, "layer": i, "kind": layer.kind, "res": res,
                         "in": cin, "out": cout, **{k: round(statistics.median(v), 2) for k, v in times.items()},
                         "load1": round(load1(), 2)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", nargs="+", default=["256", "synthface"], choices=["256", "synthface"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--threads", nargs="+", type=int, default=sorted({1, 2, os.cpu_count() or 1}))
    ap.add_argument("--paths", nargs="+", default=["plain", "exact", "relaxed"], choices=PATHS)
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per path (default: by cost)")
    ap.add_argument("--no-memory", action="store_true", help="skip the fresh-process peak-RSS column")
    ap.add_argument("--sampler", action="store_true", help="also time stylegan.sampling.generate (stage 1's call)")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--kernels", action="store_true", help="per-layer A/B of the relaxed path's conv kernels")
    ap.add_argument("--memory-only", action="store_true", help="only the fresh-process peak-RSS figures")
    ap.add_argument("--one", nargs=3, metavar=("CONFIG", "BATCH", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(args.one[0], int(args.one[1]), args.one[2], args.threads[0])
        return
    if any(t < 1 for t in args.threads) or any(b < 1 for b in args.batches):
        ap.error("--threads and --batches must be >= 1")
    if args.kernels:
        import torch
        torch.set_num_threads(args.threads[0])
        for config in args.config:
            for batch in args.batches:
                kernel_ab(config, batch)
        return
    if args.memory_only:
        print("| config | batch | path | peak RSS MiB |\n|---|---|---|---|")
        for config in args.config:
            for batch in args.batches:
                for p in args.paths:
                    print(f"| {config} | {batch} | {p} | {peak_memory(config, batch, p, args.threads[0]):.0f} |", flush=True)
        return
    if "plain" not in args.paths:
        args.paths = ["plain", *args.paths]
    import torch

    print(f"torch {torch.__version__}, cpu {torch.backends.cpu.get_cpu_capability()}, "
          f"{os.cpu_count()} cpus, nice {os.nice(0)}")
    rows = []
    for config in args.config:
        g = load_generator(config)
        for threads in args.threads:
            torch.set_num_threads(threads)
            for batch in args.batches:
                reps = args.repeats or max(3, (8 if config == "synthface" else 3) * 8 // batch)
                before = load1()
                t, cpu = time_paths(g, batch, args.paths, reps)
                sampler = time_sampler(g, batch, args.paths, max(3, reps // 2)) if args.sampler else {}
                after = load1()
                for p in args.paths:
                    row = {"config": config, "threads": threads, "batch": batch, "path": p, "repeats": reps,
                           "s_per_call": t[p], "s_per_image": t[p] / batch, "images_per_s": batch / t[p],
                           "speedup_vs_plain": t["plain"] / t[p], "cpu_s_per_image": cpu[p] / batch,
                           "cpu_speedup_vs_plain": cpu["plain"] / cpu[p], "load1_before": before, "load1_after": after}
                    if p in sampler:
                        row["sampler_images_per_s"] = batch / sampler[p]
                    rows.append(row)
                    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
                          flush=True)
    if not args.no_memory:
        for r in rows:
            if r["threads"] == args.threads[0]:
                r["peak_rss_mb"] = peak_memory(r["config"], r["batch"], r["path"], r["threads"])
    print()
    print("| config | threads | batch | path | s / image | images/s | × plain | CPU s / image | × plain (CPU) | sampler images/s (micro-batch 8) | peak RSS MiB | load (1 min) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        sampler = f"{r['sampler_images_per_s']:.2f}" if "sampler_images_per_s" in r else ""
        rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else ""
        print(f"| {r['config']} | {r['threads']} | {r['batch']} | {r['path']} | {r['s_per_image']:.4f} | "
              f"{r['images_per_s']:.2f} | {r['speedup_vs_plain']:.2f} | {r['cpu_s_per_image']:.4f} | "
              f"{r['cpu_speedup_vs_plain']:.2f} | {sampler} | {rss} | "
              f"{r['load1_before']:.2f}–{r['load1_after']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
