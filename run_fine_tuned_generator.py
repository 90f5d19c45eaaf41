"""Final generation: render a chosen (checkpoint, z) as the original did, and report its test numbers.

    python run_fine_tuned_generator.py                                  # the shipped v3 checkpoint and its best z
    python run_fine_tuned_generator.py --checkpoint runs/synthface/stage5/v3/checkpoints/epoch_0005_gen.pth \\
        --z-file runs/synthface/stage5/v3/test_z_0005.csv --z-index 21
    python run_fine_tuned_generator.py --label eyes=-1.8,mouth=0,pose=2.4

Writes ``<data root>/stage5/final/``: ``images/000000.png`` (the exact z) … ``000019.png`` (19
copies with 0.3·N(0, I) added, seeded), ``final_images.png``, the generation test of the exact
z and the copies (50 labels each), ``metrics.json``, ``report.md``.

The constants below are the values that run; the profile's ``stage5.final`` block (if any) and then
flags override them by name (``--help``). Code: ``stages/final_generation.py``.
"""
import argparse

from pipeline.entry import guarded  # first: a missing package says how to set up
from pipeline.config import add_setting_flags, constants
from stages import final_generation

PROFILE = "synthface"
VERSION = "v3"               # v1 / v3 / v4
Z_INDEX = 0                  # row of the z file (default file: stage5/v3/test_z_vector.csv, the best z)
LABEL = ""                   # "": the original's (eyes 1.8, mouth 1.6, pose -1.2, others 0); "eyes=-1.8,pose=2.4"
COPIES = 19                  # noised copies of z
NOISE_SCALE = 0.3
SEED = 0
TEST_N_Z = 30                # (the test runs on the exact z and its copies; n_z is not used)
TEST_Z_SEED = 0
TEST_BATCH_SIZE = 50
TEST_ROUND_DECIMALS = 4
TEST_SAVE_IMAGES = False
TEST_INFERENCE_PATH = "relaxed"   # test renders: "relaxed" (fast path, within 1 grey level) or "exact"
DEVICE = "cpu"               # "cpu" or "cuda"
THREADS = 0                  # torch intra-op threads (0: torch's default)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    ap.add_argument("--checkpoint", default=None, help="default: <data root>/stage5/<version>/generator.pth")
    ap.add_argument("--z-file", default=None, help="default: <data root>/stage5/v3/test_z_vector.csv")
    ap.add_argument("--property-cnn", default=None)
    ap.add_argument("--labels", default=None, help="label CSV for the evaluator's calibration (default: the "
                                                   "property CNN's relabelled set; v1: stage4/all_scores.csv)")
    ap.add_argument("--evaluator", default=None)
    ap.add_argument("--out", default=None, help="output folder (default: <data root>/stage5/final)")
    add_setting_flags(ap, constants(globals()))
    args = ap.parse_args(argv)
    paths = {k: getattr(args, k) for k in ("checkpoint", "z_file", "property_cnn", "labels", "evaluator", "out")}
    final_generation.main(args.profile, constants(globals()), args, paths)


if __name__ == "__main__":
    guarded(main)   # user errors: one "error: ..." line, exit code 2
