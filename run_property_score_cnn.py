"""Stage 5a: the property-score CNN — train it on the stage-4 scores of the kept set, relabel the set.

    python run_property_score_cnn.py
    python run_property_score_cnn.py --max-epochs 30 --lr 2e-4
    python run_property_score_cnn.py --relabel-mode train      # the original's dropout-on relabelling
    python run_property_score_cnn.py --no-shipped              # train even when the shipped run applies

Reads ``stage2/filtered/`` and ``stage4/all_scores_v2.csv``; writes ``stage5/property_cnn/``
(``property_score_cnn.pth``, ``all_scores_v2_cnn.csv`` = the labels of FineTune-v3 / v4, logs,
``run_config.json``, ``metrics.json``, ``report.md``). Resumable per epoch; a finished training is
not repeated (a re-run relabels and reports); a fresh data root installs the shipped run.

The constants below are the values that run. The profile's ``stage5.property_cnn`` block overrides
any of them by name (its width / padding / head_units also tell the later stages the network's
shape), flags override both (``--help``). Code: ``stages/property_cnn.py``.
"""
import argparse

from pipeline.entry import guarded  # first: a missing package says how to set up
from pipeline.config import add_setting_flags, constants
from stages import property_cnn

PROFILE = "synthface"
WIDTH = 0.25                 # channel width multiplier (128-px CPU size)
PADDING = 1
HEAD_UNITS = 64
LR = 5e-4                    # AdamW learning rate (spec: 5e-5)
WEIGHT_DECAY = 0.01
BATCH_SIZE = 16              # training batch (spec: 16)
VALID_BATCH_SIZE = 64
VALID_FRACTION = 0.1
T_MAX = 20                   # cosine schedule half-period in epochs (spec: 10)
PATIENCE = 20                # stop after this many epochs without a better validation criterion (spec: 20)
MAX_EPOCHS = 20              # cap on the epochs (spec: none, early stopping only)
SEED = 0                     # split, initialisation, dropout and shuffling
SELECTION_EXCLUDE = ("background_std",)    # left out of the early-stopping criterion
VAL_LOG_SAMPLES = 30         # validation images logged per epoch
RELABEL_MODE = "eval"        # "eval" or "train" (the original's dropout-on relabelling)
SCORE_BATCH_SIZE = 64        # batch of the relabelling pass
THREADS = 0                  # torch intra-op threads (0: torch's default)
PROGRESS = True
QUICK = False                # a few epochs only (smoke test)
SHIPPED = True               # install the shipped run when it applies (--no-shipped: train)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    ap.add_argument("--out", default=None, help="output folder (default: <data root>/stage5/property_cnn)")
    add_setting_flags(ap, constants(globals()))
    args = ap.parse_args(argv)
    property_cnn.main(args.profile, constants(globals()), args, args.out)


if __name__ == "__main__":
    guarded(main)   # user errors: one "error: ..." line, exit code 2
