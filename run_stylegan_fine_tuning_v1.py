"""Stage 5b: StyleGAN-FineTune-v1 — the property-conditioned StyleGAN trained adversarially on the kept set.

    python run_stylegan_fine_tuning_v1.py                         # v1: 7 labels from stage4/all_scores.csv
    python run_stylegan_fine_tuning_v1.py --v4                    # v4: eyes / mouth / pose, from the finished v1
    python run_stylegan_fine_tuning_v1.py --fake-labels real --style-mixing-prob 0.9 --randomize-noise \\
        --dense0 reinit --label-weight fresh --head reinit --lr-generator 1e-4   # the original's settings
    python run_stylegan_fine_tuning_v1.py --no-shipped            # train even when the shipped run applies
    torchrun --nproc_per_node 2 run_stylegan_fine_tuning_v1.py    # DDP (gloo on CPU, nccl on GPU)

Writes ``<data root>/stage5/v1/`` (``v4/``): train log, per-epoch grids and checkpoints, the
resumable ``train_state.pth``, ``generator.pth`` / ``discriminator.pth``, the generation test,
``run_config.json``, ``metrics.json``, ``report.md``. Interrupted runs resume; a finished run only
re-tests and reports; a fresh data root installs the shipped run when its settings match.

The constants below are the values that run. The profile's ``stage5.v1`` (``stage5.v4``) block
overrides any of them by name, flags override both (one flag per constant, ``--help``); each
overridden value is printed with its source. Code: ``stages/finetune_gan.py``.
"""
import argparse

from pipeline.entry import guarded  # first: a missing package says how to set up
from pipeline.config import add_setting_flags, constants
from stages import finetune_gan

PROFILE = "synthface"
V4 = False                   # True: the 3-label FineTune-v4 configuration (block stage5.v4, same loop)
EPOCHS = 2                   # the original: 39 epochs of 4,703 images on a GPU
BATCH_SIZE = 16              # global batch (v1 16, v4 8 in the original)
LR_GENERATOR = 1e-4          # mapping dense layers (the original's)
LR_LABEL = 1e-4              # label_weight
LR_DISCRIMINATOR = 1e-4      # D's last three layers
R1_GAMMA = 10.0
G_MAX_UPDATES = 4            # G updates per step while L_G >= G_RATIO * L_D
G_RATIO = 2.0
FAKE_LABELS = "dataset"      # "dataset" (independent draws), "real" (the original: the real batch's), "normal"
STYLE_MIXING_PROB = 0.0      # the original 0.9
RANDOMIZE_NOISE = False      # the original True
W_MOVING_DECAY = 0.995
MBSTD_GROUP = 16
DROP_LAST = True
DENSE0 = "keep"              # "keep" (pretrained z columns, zero label columns), "reinit" (the original), "regress"
REGRESS_LABELS = "eyes,mouth,pose"   # labels whose path dense0="regress" sets from the kept set
LABEL_WEIGHT = "auto"        # "auto" or "fresh" (the original)
HEAD = "keep"                # "keep" or "reinit" (the original)
SEED = 0
LOG_EVERY = 10               # train_log.csv: every 10th batch (and the first 10 of epoch 0)
MAX_STEPS_PER_EPOCH = 0      # steps per epoch cap (0: the whole kept set)
CHECKPOINT_EVERY = 50        # steps between resumable snapshots
GRID_Z = 10                  # rows of the per-epoch monitoring grid
TEST_N_Z = 30                # generation test: latents x 50 labels
TEST_Z_SEED = 0
TEST_BATCH_SIZE = 50
TEST_ROUND_DECIMALS = 4
TEST_SAVE_IMAGES = False     # True: every test image as PNG (the original did)
TEST_INFERENCE_PATH = "relaxed"   # test renders: "relaxed" (fast path, within 1 grey level) or "exact"
FEMALE_N = 300               # random outputs for the female share
DEVICE = "auto"              # "auto", "cpu" or "cuda"
THREADS = 0                  # torch intra-op threads per process (0: torch's default)
PROGRESS = True
QUICK = False                # tiny smoke run: 1 epoch of 4 steps, 3 test z
SHIPPED = True               # install the shipped run when it applies (--no-shipped: train)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    ap.add_argument("--out", default=None, help="output folder (default: <data root>/stage5/<version>)")
    ap.add_argument("--labels", default=None, help="label CSV (v1: stage4/all_scores.csv; v4: the property CNN's)")
    ap.add_argument("--init-dir", default=None, help="v4: folder of the finished v1 (default <data root>/stage5/v1)")
    ap.add_argument("--property-cnn", default=None,
                    help="judge (default: <data root>/stage5/property_cnn/property_score_cnn.pth)")
    ap.add_argument("--evaluator", default=None, help="synthface evaluator weights (default: the profile's)")
    add_setting_flags(ap, constants(globals()))
    args = ap.parse_args(argv)
    paths = {k: getattr(args, k) for k in ("out", "labels", "init_dir", "property_cnn", "evaluator")}
    finetune_gan.main(args.profile, constants(globals()), args, paths)


if __name__ == "__main__":
    guarded(main)   # user errors: one "error: ..." line, exit code 2
