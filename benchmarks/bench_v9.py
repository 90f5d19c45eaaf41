"""FineTune-v9 speed: seconds per v9 training step (batch 8) at the synthface sizes and at 256 px, random init.

    nice -n 10 .venv/bin/python benchmarks/bench_v9.py                      # synthface and celeba256, 1 thread
    nice -n 10 .venv/bin/python benchmarks/bench_v9.py --configs synthface --reps 5 --threads 2

A step here is one D update (fresh z, R1 γ 10) and one G update — the count the original made in
950 / 958 (D) and 956 / 958 (G) of its logged steps — with the v9 frozen sets and AdamW over all
parameters. The monitor (100 images, 20 fold models) is timed separately per log point.
The machine load (1-minute load average, cores) is printed beside the figures: other jobs on a
shared machine slow every figure down.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run as a script from anywhere

from pipeline.profiles import load_profile


def build(profile_name: str):
    from stylegan.discriminator import DiscriminatorConfig
    from stylegan.generator import GeneratorConfig
    from stylegan_modified.v9 import build_v9_discriminator, build_v9_generator
    prof = load_profile(profile_name)
    gcfg = GeneratorConfig.from_dict(prof["generator"])
    dcfg = DiscriminatorConfig.from_dict(prof["discriminator"])
    return prof, build_v9_generator(gcfg, seed=0), build_v9_discriminator(dcfg, seed=0)


def one_update_each(trainer):
    """Scripted step rule: exactly one D and one G update per step (the original's usual count)."""
    from training.v9 import V9Settings
    trainer.s = V9Settings(**{**trainer.s.__dict__, "d_max_updates": 1, "g_max_updates": 1})
    return trainer


def step_seconds(trainer, batch: int, reps: int) -> tuple[float, float]:
    r = trainer.g.cfg.resolution
    x = torch.rand(batch, 3, r, r, generator=torch.Generator().manual_seed(0)) * 2 - 1
    trainer.train_step(x, None, 0, 0)                                    # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for k in range(reps):
        trainer.train_step(x, None, 0, k + 1)
    return (time.perf_counter() - t0) / reps, (time.process_time() - c0) / reps


def monitor_seconds(prof, g) -> float:
    """One log point: 100 images (sub-batches of 4), JPEG round trip, 5 folds x 4 properties (profile widths)."""
    import run_cnn
    from cnn.kfold import build_model
    from pipeline.config import constants, resolve
    from stages.filtering import fold_settings
    from training.v9 import MonitorSettings, V9Monitor
    values = resolve(constants(vars(run_cnn)), prof, "stage2", print_fn=None).values
    cnns = {p: [build_model(fold_settings(values, p, int(prof["resolution"]))).eval() for _ in range(5)]
            for p in ("gender", "quality", "age", "glass")}
    mon = V9Monitor(cnns, MonitorSettings())
    t0 = time.perf_counter()
    mon.measure(g, 0, 0)
    return time.perf_counter() - t0


def main(argv=None):
    from training.v9 import V9Settings, V9Trainer
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="synthface,celeba256")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-monitor", action="store_true", help="skip the per-log-point monitor timing")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch threads {args.threads}, cores {os.cpu_count()}, load average at start {os.getloadavg()[0]:.2f}", flush=True)
    for name in args.configs.split(","):
        prof, g, d = build(name)
        tr = one_update_each(V9Trainer(g, d, V9Settings()))
        wall, cpu = step_seconds(tr, 8, args.reps)
        n_img = 4930 if prof["resolution"] >= 256 else 2309      # the original's kept set / the shipped synthface kept set
        print(f"{name}: {g.cfg.resolution} px, G {sum(p.numel() for p in g.parameters()):,} params "
              f"(trains {sum(dict(g.named_parameters())[n].numel() for n in tr.g_trainable):,}), "
              f"D trains {sum(dict(d.named_parameters())[n].numel() for n in tr.d_trainable):,}", flush=True)
        print(f"  v9 step (1 D + 1 G update, batch 8): {wall:.3f} s wall, {cpu:.3f} s CPU per step "
              f"(load average {os.getloadavg()[0]:.2f})"
              + f"; an epoch of {n_img:,} images ({-(-n_img // 8)} steps) ≈ {-(-n_img // 8) * wall / 60:.1f} min wall, "
              f"{-(-n_img // 8) * cpu / 60:.1f} min CPU", flush=True)
        if not args.no_monitor:
            print(f"  monitor log point (100 images, 20 fold models, JPEG): {monitor_seconds(prof, g):.2f} s "
                  f"(load average {os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
    main()
