"""The direction leaderboard (issue 19): every editing method on one generator, scored by truth.

    python run_direction_leaderboard.py                                  # the full board (v9)
    python run_direction_leaderboard.py --n-cases 4 --n-fit 200 --out /tmp/board   # a tiny run
    python run_direction_leaderboard.py --generator-checkpoint shipped-v1   # before stage 6 has run

Methods (``editing/``): VectorFind SVM (16 groups, plain and conditional) and gradient,
InterFaceGAN (plain and conditional), SeFa, GANSpace, StyleSpace; references: the v3 label and the
oracle (the world's render with only the edited parameter moved: the judges' own cross-talk).
Each is fitted, its α calibrated in truth units (the independent evaluator) and edited on the
same seeded cases; the evaluator, the property CNN and stages 3–4 (when the data root has stage 4;
the first PARSING_CASES cases) judge, and the board says where they disagree.
Writes ``<data root>/leaderboard/`` (``leaderboard.csv``, ``report.md``, ``methods/<name>/``,
``lineage.json``, ``metrics.json`` last); a finished method is not redone (``--force`` redoes all);
a changed or unfinished upstream (stage 6, stage 4) is refused. The profile's
``leaderboard`` block overrides the constants by name, flags override both. Code:
``stages/leaderboard.py``.
"""
import argparse

from pipeline.entry import guarded  # first: a missing package says how to set up
from pipeline.config import add_setting_flags, constants
from stages import leaderboard

PROFILE = "synthface"
METHODS = ("vectorfind_svm", "vectorfind_svm_conditional", "vectorfind_gradient", "interfacegan",
           "interfacegan_conditional", "sefa", "ganspace", "stylespace", "v3_label", "oracle")
N_CASES = 100                # seeded cases every method edits
N_CALIBRATE = 8              # cases of the α calibration
N_FIT = 1000                 # scored samples for InterFaceGAN / VectorFind
N_PICK = 64                  # scored samples that pick SeFa / GANSpace / StyleSpace components
N_PCA = 2000                 # w samples of GANSpace's PCA (mapping only)
ALPHA_STEPS = 5              # α = -1 … +1 per property and case
TARGET_STDS = 1.5            # α = 1 moves the property by this many truth stds
VF_POINT = "w"               # VectorFind's extraction point (w / mapping_split1 / mapping_split2)
GRADIENT_MAX_EPOCHS = 1000
FIT_JUDGE = "property_cnn"   # the scores methods are fitted on (property_cnn / evaluator / parsing); the
                             # evaluator scores the board, so fitting on it would grade a method by its own teacher
SEFA_LAYERS = (0, 4)
SEED = 0
BATCH_SIZE = 50
GENERATOR_CHECKPOINT = "stage6/v9/generator.pth"   # inside the data root, a path, or "shipped-v1"
PARSING_CASES = 20           # cases the stages 3-4 judge reads (0: all): it parses at 224 px, about 8 images/s
THREADS = 1
PROGRESS = True
FORCE = False


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    ap.add_argument("--out", default=None, help="output folder (default: <data root>/leaderboard)")
    add_setting_flags(ap, constants(globals()))
    args = ap.parse_args(argv)
    leaderboard.main(args.profile, constants(globals()), args, args.out)


if __name__ == "__main__":
    guarded(main)   # user errors: one "error: ..." line, exit code 2
