"""Stage 1: sample images and their latent vectors from the profile's original StyleGAN.

Settings come in three layers: the constants below, then the profile's ``stage1`` block (a named
override preset; each value it changes is printed at start), then flags, e.g.
    python run_original_generator.py --num-images 1000 --batch-size 8
    python run_original_generator.py --shard 0/2 &  python run_original_generator.py --shard 1/2
The resolved settings and their sources are recorded in <out>/run_config.json.
"""
import argparse

from pipeline.entry import guarded  # first: a missing package says how to set up
from pipeline.config import add_setting_flags, constants
from pipeline import profiles
from stages import sampling

PROFILE = profiles.DEFAULT_PROFILE
NUM_IMAGES = 10_000
BATCH_SIZE = 16            # images per chunk; results do not depend on it (synthface / celeba256 presets: 8)
SEED = 0
TRUNC_PSI = 1.0            # 1.0 = no truncation (the original's setting)
TRUNC_LAYERS = 0           # 0 = no truncation
STYLE_MIXING_PROB = 0.0    # 0 = eval-mode sampling; 0.9 reproduces the original's training-mode mixing
RANDOMIZE_NOISE = False    # False: the stored per-layer noise maps (the original's setting)
THREADS = 0                # torch intra-op threads (0: torch's default); recorded: 1 and 2 threads differ slightly
INFERENCE_PATH = "auto"    # "exact": byte-identical to the plain generator; "relaxed": the fast path (within 1e-4,
                           # recorded); "auto": a folder's recorded path, relaxed for a new folder (2x faster)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    add_setting_flags(ap, constants(globals()))
    ap.add_argument("--shard", default=None, help="i/n: this process renders batches b with b %% n == i")
    ap.add_argument("--out", default=None, help="output folder (default: <data root>/stage1)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k not in ("profile", "shard", "out", "no_progress")}
    sampling.main(constants(globals()), args.profile, flags, out=args.out, shard=args.shard,
                  show_progress=not args.no_progress)


if __name__ == "__main__":
    guarded(main)   # user errors: one "error: ..." line, exit code 2
