"""Stage 5 reference: the generation test on an ideal conditional generator (the oracle).

    python run_oracle.py                       # 30 z x 50 labels, both judges
    python run_oracle.py --test-n-z 10 --out /tmp/oracle

The oracle is the world's renderer with eyes / mouth / pose set by the label and everything else
exactly z's (``evaluation/oracle.py``): the least leak the judges can show. Writes
``<data root>/stage5/oracle/`` (the test's files and ``fit.json``); a finished test of the same
``n_z`` is not repeated (``--force`` re-runs). Needs the property CNN (``run_property_score_cnn.py``).

The constants below are the values that run; the profile's ``stage5.generation_test`` block
overrides the TEST_* ones by name, flags override both (``--help``). Code: ``stages/oracle.py``.
"""
import argparse

from pipeline.entry import guarded  # first: a missing package says how to set up
from pipeline.config import add_setting_flags, constants
from stages import oracle

PROFILE = "synthface"
FORCE = False                # re-run a finished test
TEST_N_Z = 30                # latents x 50 labels
TEST_Z_SEED = 0
TEST_BATCH_SIZE = 50
TEST_ROUND_DECIMALS = 4
TEST_SAVE_IMAGES = False
THREADS = 0                  # torch intra-op threads (0: torch's default)
PROGRESS = True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    ap.add_argument("--out", default=None, help="output folder (default: <data root>/stage5/oracle)")
    add_setting_flags(ap, constants(globals()))
    args = ap.parse_args(argv)
    oracle.main(args.profile, constants(globals()), args, args.out)


if __name__ == "__main__":
    guarded(main)   # user errors: one "error: ..." line, exit code 2
