"""Train the synthface default face parser (``segmentation.synth_segmenter``) on rendered faces.

    python -m synthface.train_segmenter                       # full training (~30 min, 1 thread), resumes
    python -m synthface.train_segmenter --steps 40 --out /tmp/s --weights /tmp/s/seg.pth   # quick check
    python -m synthface.train_segmenter --no-augment --out /tmp/noaug --weights /tmp/noaug/seg.pth
    # adaptation to the generator's images (ISSUES.md #18; the shipped weights): three quarters of
    # each batch is G(z) with the true mask of render(P(z)), starting from the render-trained weights
    python -m synthface.train_segmenter --init-weights runs/synthface/segmenter_renders.pth \
        --generated-share 0.75 --steps 1500 --lr 5e-4 --val-every 250 --threads 2 --out runs/synthface/adapt_segmenter2

Batches are ``render(truth(z))`` with the renderer's exact masks, degraded by the augmentation
(``AugmentSettings``) unless ``--no-augment``. Validation every ``--val-every`` steps on held-out
renders (crisp and augmented) and, when the profile's generator weights exist, on a development
stream of generated images G(z) (seed ``DEV_G_SEED``; the evaluation stream of
``python -m synthface.evaluate_segmenter`` is never used here).

Writes to ``<out>`` (default ``<data root>/train_segmenter``): ``train_state.pth`` (resumable:
re-running the same command continues), ``train_log.json``, ``loss_curve.png``, ``metrics.json``;
when finished, the weights (``--weights``, default ``synthface/weights/segmenter.pth``) and, for the
default weights path, a copy of the log, curve and metrics in ``synthface/weights/segmenter_training/``.
"""
import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.checkpoint import CheckpointError
from pipeline.io import atomic_write_json, sha256_file
from pipeline.profiles import REPO_ROOT, load_profile
from segmentation.synth_segmenter import count_parameters, save_segmenter
from stylegan.sampling import build_generator, generate_uint8
from synthface.renderer import render_batch
from synthface.segmenter_training import DEV_G_SEED, SegTrainSettings, plot_training_log, train_segmenter
from synthface.truth import world as world_map

WEIGHTS = REPO_ROOT / "synthface" / "weights" / "segmenter.pth"
LOG_COPY = REPO_ROOT / "synthface" / "weights" / "segmenter_training"


def dev_generated_set(profile, world, n: int, seed: int = DEV_G_SEED):
    """(G(z) uint8 [n, R, R, 3], true masks [n, R, R]) for a development z stream, or None without weights."""
    try:
        g = build_generator(profile)
    except CheckpointError as exc:
        print(f"no generated development set ({exc})")
        return None
    z = np.random.default_rng(seed).standard_normal((n, world.z_dim), dtype=np.float32)
    imgs = np.concatenate([generate_uint8(g, z[i:i + 32]) for i in range(0, n, 32)])
    _, masks = render_batch(world.truth(z), resolution=profile["resolution"])
    return imgs, masks


def main(argv=None):
    d = SegTrainSettings()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="synthface")
    for name, val in d.to_dict().items():
        if isinstance(val, (int, float)) and not isinstance(val, bool):
            ap.add_argument(f"--{name.replace('_', '-')}", type=type(val), default=val)
    ap.add_argument("--widths", default=",".join(map(str, d.widths)), help="U-Net widths per level")
    ap.add_argument("--no-augment", action="store_true", help="train on crisp renders only (ablation)")
    ap.add_argument("--init-weights", default="", help="adapt this segmenter checkpoint instead of training from scratch")
    ap.add_argument("--dev-n", type=int, default=192, help="generated development images to monitor (0: none)")
    ap.add_argument("--out", default=None, help="work folder (default: <data root>/train_segmenter)")
    ap.add_argument("--weights", default=str(WEIGHTS), help="where the finished weights go")
    ap.add_argument("--stop-after", type=int, default=None, help="end this call after that step (resume later)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    kw = {k: getattr(args, k) for k, v in d.to_dict().items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    s = SegTrainSettings(**kw, augment=not args.no_augment, widths=tuple(int(w) for w in args.widths.split(",")),
                         init_weights=args.init_weights)
    torch.set_num_threads(s.threads)
    profile = load_profile(args.profile)
    out = Path(args.out) if args.out else profile.stage_dir("train_segmenter")
    world = world_map(profile["generator"]["z_dim"], profile["world_seed"])
    dev = dev_generated_set(profile, world, args.dev_n) if args.dev_n > 0 else None
    t0 = time.perf_counter()
    generator = None
    if s.generated_share > 0:
        generator = build_generator(profile)
    res = train_segmenter(world, out, s, show_progress=not args.no_progress, stop_after=args.stop_after, dev_set=dev,
                          generator=generator)
    plot_training_log(res["log"], res["val_log"], out / "loss_curve.png")
    steps = [r for r in res["log"] if r["step"] > 5]
    metrics = {"settings": s.to_dict(), "world_seed": profile["world_seed"], "dev_g_seed": DEV_G_SEED,
               "dev_n": args.dev_n if dev is not None else 0, "step": res["step"], "finished": res["finished"],
               "seconds_this_run": round(time.perf_counter() - t0, 1),
               "mean_step_seconds": float(np.mean([r["seconds"] for r in steps])) if steps else None,
               "mean_data_seconds": float(np.mean([r["data_seconds"] for r in steps])) if steps else None,
               "parameters": count_parameters(res["model"]), "last_validation": res["val_log"][-1] if res["val_log"] else None,
               "threads": s.threads,
               "init_weights_sha256": sha256_file(s.init_weights) if s.init_weights else None,
               "generator_sha256": sha256_file(profile.path(profile["generator_checkpoint"])) if generator else None}
    atomic_write_json(out / "metrics.json", metrics)
    if not res["finished"]:
        print(f"stopped at step {res['step']} of {s.steps}; run the same command again to resume")
        return
    weights = Path(args.weights)
    save_segmenter(res["model"], weights, meta={"settings": s.to_dict(), "world_seed": profile["world_seed"],
                                                "steps": res["step"]})
    metrics["weights_sha256"] = sha256_file(weights)
    metrics["weights_bytes"] = weights.stat().st_size
    atomic_write_json(out / "metrics.json", metrics)
    if weights.resolve() == WEIGHTS.resolve():
        copy_dir = LOG_COPY / "adaptation" if s.init_weights else LOG_COPY
        copy_dir.mkdir(parents=True, exist_ok=True)
        for name in ("train_log.json", "loss_curve.png", "metrics.json"):
            shutil.copyfile(out / name, copy_dir / name)
    v = metrics["last_validation"] or {}
    print(f"weights written to {weights} ({metrics['weights_bytes'] / 2**20:.2f} MiB); mean IoU: renders "
          f"{v.get('renders', float('nan')):.4f}, augmented {v.get('renders_augmented', float('nan')):.4f}, "
          f"G(z) dev {v.get('dev_generated', float('nan')):.4f}")


if __name__ == "__main__":
    main()
