"""Stage 1: sample images and their latent vectors from the profile's original StyleGAN.

Edit the constants below or override them on the command line, e.g.
    python run_original_generator.py --num-images 1000 --batch-size 8
    python run_original_generator.py --shard 0/2 &  python run_original_generator.py --shard 1/2
"""
import argparse

from pipeline.profiles import DEFAULT_PROFILE, load_profile
from pipeline.runtime import Shard

PROFILE = DEFAULT_PROFILE
NUM_IMAGES = 10_000
BATCH_SIZE = None          # None: the profile's value (synthface 8, celeba256 8); results do not depend on it
SEED = 0
TRUNC_PSI = 1.0            # 1.0 = no truncation (the original's setting)
TRUNC_LAYERS = 0           # 0 = no truncation
STYLE_MIXING_PROB = 0.0    # 0 = eval-mode sampling; 0.9 reproduces the original's training-mode mixing
RANDOMIZE_NOISE = False    # False: the stored per-layer noise maps (the original's setting)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    ap.add_argument("--num-images", type=int, default=NUM_IMAGES)
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--trunc-psi", type=float, default=TRUNC_PSI)
    ap.add_argument("--trunc-layers", type=int, default=TRUNC_LAYERS)
    ap.add_argument("--style-mixing-prob", type=float, default=STYLE_MIXING_PROB)
    ap.add_argument("--randomize-noise", action=argparse.BooleanOptionalAction, default=RANDOMIZE_NOISE)
    ap.add_argument("--shard", default=None, help="i/n: this process renders batches b with b %% n == i")
    ap.add_argument("--out", default=None, help="output folder (default: <data root>/stage1)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    from stylegan.stage1 import Stage1Settings, run_stage1

    profile = load_profile(args.profile)
    settings = Stage1Settings(
        num_images=args.num_images, batch_size=args.batch_size or profile["stage1"]["batch_size"],
        seed=args.seed, trunc_psi=args.trunc_psi, trunc_layers=args.trunc_layers,
        style_mixing_prob=args.style_mixing_prob, randomize_noise=args.randomize_noise)
    result = run_stage1(profile, settings, out_dir=args.out, shard=Shard.parse(args.shard),
                        show_progress=not args.no_progress)
    if result.get("complete") and "hand_labels" in profile:
        from synthface.hand_labels import write_labels_for_stage1
        result["hand_labels"] = write_labels_for_stage1(profile, args.out)
        print(f"emulated hand labels: {result['hand_labels']['count']} images, "
              f"{result['hand_labels']['noise_rate']:.1%} label noise")
    run = result.get("last_run", result)
    state = "complete" if result.get("complete") else "partial (other shards pending)"
    print(f"stage 1 {state}: generated {run['generated_this_run']}, skipped {run['skipped_existing']}, "
          f"{run['images_per_s']} images/s, peak RSS {run['peak_rss_mb']} MiB")


if __name__ == "__main__":
    main()
