"""Stage-5 speed: seconds per FineTune-v3 / v1 training step, and generation-test images/s batched vs one at a time.

    python benchmarks/bench_finetune.py                 # synthface and the 256-px configuration, 1 thread
    python benchmarks/bench_finetune.py --configs synthface --reps 5

Models are freshly initialised at the profile's architecture (no checkpoint needed): the
conditional G (v3: E 24; v1: E 16), the CVAE encoder, the property-score CNN (the profile's
``stage5.property_cnn`` widths) and the stage-2 gender CNN (the profile's ``stage2`` widths).
A v3 step = encoder + G + both CNNs forward, backward, AdamW step (batch 8); a v1 step = one D
update with R1 and one G update (batch 16; the loop makes 1-4 G updates per step, 2.2 on
average in the original). Generation test = render + property-CNN judge per image.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run as a script from anywhere

from pipeline.profiles import load_profile


def build(profile_name: str):
    from cnn.filter_cnns import FilterCNN
    import run_cnn
    from pipeline.config import constants, resolve
    from stages.filtering import fold_settings
    from stages.property_cnn import property_cnn_config
    from stylegan_modified import CVAEEncoder, FineTuneV3, build_discriminator, build_generator
    from stages.bases import build_configs
    from evaluation.networks import GenderEnsemble
    prof = load_profile(profile_name)
    gcfg, dcfg = build_configs(prof)
    pc = property_cnn_config(prof)
    from cnn.property_score_cnn import PropertyScoreCNN
    cnn = PropertyScoreCNN(pc["resolution"], pc["width"], pc["padding"], pc["head_units"]).eval().requires_grad_(False)
    fs = fold_settings(resolve(constants(vars(run_cnn)), prof, "stage2", print_fn=None).values, "gender",
                       int(prof["resolution"]))
    gender = GenderEnsemble([FilterCNN("gender", fs.resolution, fs.width, fs.padding)]).eval().requires_grad_(False)
    g3 = build_generator(gcfg, "v3")
    enc = CVAEEncoder(gcfg.resolution, 7, gcfg.z_dim)
    g1, d1 = build_generator(gcfg, "v1"), build_discriminator(dcfg, "v1")
    return prof, gcfg, cnn, FineTuneV3(enc, g3, cnn, gender), g1, d1


def step_seconds(trainer, batch: int, labels, reps: int) -> float:
    """Mean seconds of ``trainer.train_step`` on a random batch, after one warm-up step."""
    g = trainer.model.stylegan_generator if hasattr(trainer, "model") else trainer.g
    r = g.cfg.resolution
    x, y = torch.rand(batch, 3, r, r) * 2 - 1, torch.from_numpy(labels[:batch])
    trainer.train_step(x, y, 0, 0)
    t0, c0 = time.perf_counter(), time.process_time()
    for k in range(reps):
        trainer.train_step(x, y, 0, k + 1)
    return (time.perf_counter() - t0) / reps, (time.process_time() - c0) / reps


def test_images_per_second(g, cnn, n: int, batch: int) -> float:
    from stylegan_modified.conditional import synthesize
    z = torch.randn(n, g.cfg.z_dim)
    lab = torch.randn(n, 7)
    with torch.inference_mode():                      # warm-up at this batch size (allocator, kernels)
        cnn(synthesize(g, z[:batch], lab[:batch]))
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for i in range(0, n, batch):
            cnn(synthesize(g, z[i:i + batch], lab[i:i + batch]))
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="synthface,celeba256")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    labels = np.random.default_rng(0).standard_normal((64, 7)).astype(np.float32)
    rows = []
    for name in args.configs.split(","):
        prof, gcfg, cnn, model, g1, d1 = build(name)
        big = gcfg.resolution >= 256
        n_img = 8 if big else 100
        from stylegan_modified.distributed import DistContext
        from training.gan import GanSettings, GanTrainer
        from training.cvae import V3Settings, V3Trainer
        reps = 1 if big else args.reps
        v3 = step_seconds(V3Trainer(model, labels, V3Settings(), DistContext()), 8, labels, reps)
        v1 = step_seconds(GanTrainer(g1, d1, labels, GanSettings(g_max_updates=1), DistContext()), 16, labels, reps)
        g3 = model.stylegan_generator
        batched = test_images_per_second(g3, cnn, n_img, 8 if big else 50)
        single = test_images_per_second(g3, cnn, min(n_img, 20), 1)
        rows.append((name, gcfg.resolution, v3, v1, batched, single))
        print(f"{name}: v3 step {v3[0]:.3f} s ({v3[1]:.3f} CPU s), v1 step {v1[0]:.3f} s ({v1[1]:.3f} CPU s), test "
              f"{batched[0]:.1f} img/s batched, {single[0]:.1f} img/s one at a time", flush=True)
    print(f"\n{args.threads} thread(s); load average {open('/proc/loadavg').read().split()[0]}; "
          f"wall seconds (CPU seconds of this process in brackets)")
    print("| config | px | v3 step (batch 8) s | v1 step (batch 16, 1 G update) s | test img/s batched | "
          "test img/s one at a time |")
    print("|---|---|---|---|---|---|")
    for name, res, v3, v1, b, s in rows:
        print(f"| {name} | {res} | {v3[0]:.3f} ({v3[1]:.3f}) | {v1[0]:.3f} ({v1[1]:.3f}) | {b[0]:.1f} ({b[1]:.1f}) | "
              f"{s[0]:.1f} ({s[1]:.1f}) |")


if __name__ == "__main__":
    main()
