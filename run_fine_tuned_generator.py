"""Final generation: render a chosen (checkpoint, z) as the original did, and report its test numbers.

    python run_fine_tuned_generator.py                                  # the shipped v3 checkpoint and its best z
    python run_fine_tuned_generator.py --checkpoint runs/synthface/stage5/v3/checkpoints/epoch_0005_gen.pth \\
        --z-file runs/synthface/stage5/v3/test_z_0005.csv --z-index 21
    python run_fine_tuned_generator.py --label eyes=-1.8,mouth=0,pose=2.4

Writes ``<data root>/stage5/final/``: ``images/000000.png`` (the exact z) … ``000019.png`` (19
copies with 0.3·N(0, I) added, seeded), ``final_images.png``, the generation test of the exact
z and the copies (50 labels each), ``metrics.json``, ``report.md``.
"""
import argparse

from pipeline.profiles import DEFAULT_PROFILE, load_profile

PROFILE = DEFAULT_PROFILE
VERSION = "v3"               # v1 / v3 / v4
CHECKPOINT = None            # default: <data root>/stage5/<version>/generator.pth (v3: the best epoch)
Z_FILE = None                # default: <data root>/stage5/v3/test_z_vector.csv (the best z of that epoch)
Z_INDEX = 0                  # row of Z_FILE
LABEL = None                 # None: the original's (eyes 1.8, mouth 1.6, pose -1.2, others 0)
COPIES = 19                  # noised copies of z
NOISE_SCALE = 0.3
SEED = 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    ap.add_argument("--version", choices=("v1", "v3", "v4"), default=VERSION)
    ap.add_argument("--checkpoint", default=CHECKPOINT)
    ap.add_argument("--z-file", default=Z_FILE)
    ap.add_argument("--z-index", type=int, default=Z_INDEX)
    ap.add_argument("--label", default=LABEL, help="name=value pairs (others 0) or one number per label")
    ap.add_argument("--copies", type=int, default=COPIES)
    ap.add_argument("--noise-scale", type=float, default=NOISE_SCALE)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--property-cnn", default=None)
    ap.add_argument("--labels", default=None, help="label CSV for the evaluator's calibration (default: the "
                                                   "property CNN's relabelled set; v1: stage4/all_scores.csv)")
    ap.add_argument("--evaluator", default=None)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="output folder (default: <data root>/stage5/final)")
    from stylegan_modified.stage5_cli import add_test_args, resolve_test
    add_test_args(ap)
    args = ap.parse_args(argv)

    from pathlib import Path

    import torch

    from stylegan_modified.final_generation import run_final_generation
    from stylegan_modified.stage5_gan import CNN_LABELS, DEFAULT_LABELS, PROPERTY_CNN

    if args.threads:
        torch.set_num_threads(args.threads)
    profile = load_profile(args.profile)
    root = profile.data_root
    stage = root / "stage5" / args.version
    m = run_final_generation(
        profile, args.version, Path(args.checkpoint) if args.checkpoint else stage / "generator.pth",
        Path(args.z_file) if args.z_file else root / "stage5" / "v3" / "test_z_vector.csv", args.z_index,
        Path(args.out) if args.out else root / "stage5" / "final", args.label, args.copies, args.noise_scale,
        args.seed, resolve_test(profile, args), Path(args.property_cnn) if args.property_cnn else root / PROPERTY_CNN,
        Path(args.labels) if args.labels else root / DEFAULT_LABELS.get(args.version, CNN_LABELS),
        args.evaluator, args.device)
    for r in m["test"]:
        e = r["exact_z"]
        print(f"{r['judge']}: exact z {'passes' if e['passed'] else 'fails'}; r "
              + ", ".join(f"{p} {e[p + '_corr']:.3f}" for p in ("eyes", "mouth", "pose"))
              + f"; noised copies passing {r['noised_passes']}/{m['copies']}")


if __name__ == "__main__":
    main()
