"""Stage 5c: StyleGAN-FineTune-v3 — the conditional VAE around the v1 generator (the adopted model).

    python run_stylegan_fine_tuning_v3.py
    python run_stylegan_fine_tuning_v3.py --reconstruction            # add a real reconstruction + KL objective
    python run_stylegan_fine_tuning_v3.py --gender-input signed --gender-folds fold0 --loss-cnn-mode train \\
        --dense0 reinit --test-z-source last_batches --test-dropout --lr-generator 1e-4 --lr-label 1e-4 \\
        --gen-labels image --prior-z-fraction 0 --select-judge primary --epochs 35 --t-max 10 \\
        --out runs/synthface/stage5/v3_original                        # the original's settings
    python run_stylegan_fine_tuning_v3.py --no-shipped                # train even when the shipped run applies
    torchrun --nproc_per_node 2 run_stylegan_fine_tuning_v3.py        # DDP (gloo on CPU, nccl on GPU)

Needs the property CNN (``run_property_score_cnn.py``), the stage-2 gender fold models and,
by default, the finished FineTune-v1 (``--init-from base`` starts from the base generator).
Writes ``<data root>/stage5/v3/``: per-epoch generation tests, a checkpoint for every passing
epoch, the best one as ``generator.pth`` / ``encoder.pth`` / ``test_z.csv``, logs,
``run_config.json``, ``metrics.json``, ``report.md``. Resumable; a finished run only re-tests and
reports; a fresh data root installs the shipped run when its settings match.

The constants below are the values that run (ISSUES.md #19 / #21 for the choices that differ from
the original's). The profile's ``stage5.v3`` block overrides any of them by name, flags override
both (``--help``); each overridden value is printed with its source. Code: ``stages/finetune_v3.py``.
"""
import argparse

from pipeline.entry import guarded  # first: a missing package says how to set up
from pipeline.config import add_setting_flags, constants
from stages import finetune_v3

PROFILE = "synthface"
EPOCHS = 3                   # the original: 35
BATCH_SIZE = 8               # global batch
LR_GENERATOR = 0.1           # mapping dense layers (the original 1e-4: no control in a CPU budget, ISSUES #19)
LR_LABEL = 1e-4              # label_weight
LR_ENCODER = 1e-5
T_MAX = 3                    # cosine schedule period in epochs (the original 10)
WEIGHT_PROPERTY = 1.0        # loss = C + G + 0.2 M + 0.05 V (the original's weights)
WEIGHT_GENDER = 1.0
WEIGHT_MU = 0.2
WEIGHT_LOGVAR = 0.05
RECONSTRUCTION = False       # True: + reconstruction MSE and KL (a real CVAE objective)
WEIGHT_RECONSTRUCTION = 1.0
WEIGHT_KL = 0.05
IDENTITY_WEIGHT = 0.0
GEN_LABELS = "image"         # "image" (the original), "shuffled", "box"
GEN_LABEL_PROB = 1.0
PRIOR_Z_FRACTION = 0.5       # share of the batch rendered from prior z instead of the posterior
LABEL_BOX = "-2.2,2.2;-1.6,2.0;-1.6,4.0"   # gen_labels="box": eyes; mouth; pose ranges
LOSS_CNN_MODE = "eval"       # "eval" or "train" (the original: dropout on)
GENDER_INPUT = "unit"        # "unit" ([0, 1]) or "signed" (the original's [-1, 1])
GENDER_FOLDS = "mean"        # "mean" of the K fold models or "fold0" (the original)
INIT_FROM = "v1"             # "v1" (the finished FineTune-v1) or "base"
DENSE0 = "regress"           # label path start: "regress" (from the kept set), "keep", "reinit" (the original)
REGRESS_LABELS = "eyes,mouth,pose"
SEED = 0
TEST_Z_SOURCE = "images"     # per-epoch test latents: "images" (posteriors of 30 seeded images), "last_batches", "prior"
TEST_DROPOUT = False         # the original measured with dropout on
SELECT_JUDGE = "parsing"     # judge choosing the shipped epoch: "parsing" (stages 3-4) or "primary"
LOG_EVERY = 20
MAX_STEPS_PER_EPOCH = 0      # steps per epoch cap (0: the whole kept set)
CHECKPOINT_EVERY = 100       # steps between resumable snapshots
TEST_N_Z = 30                # generation test: latents x 50 labels
TEST_Z_SEED = 0
TEST_BATCH_SIZE = 50
TEST_ROUND_DECIMALS = 4
TEST_SAVE_IMAGES = False
TEST_INFERENCE_PATH = "relaxed"   # test renders: "relaxed" (fast path, within 1 grey level) or "exact"
FEMALE_N = 300               # random outputs for the female share
DEVICE = "auto"
THREADS = 0                  # torch intra-op threads per process (0: torch's default)
PROGRESS = True
QUICK = False                # tiny smoke run: 1 epoch of 4 steps, 3 test z
SHIPPED = True               # install the shipped run when it applies (--no-shipped: train)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    ap.add_argument("--out", default=None, help="output folder (default: <data root>/stage5/v3)")
    ap.add_argument("--labels", default=None, help="label CSV (default: the property CNN's all_scores_v2_cnn.csv)")
    ap.add_argument("--init-dir", default=None, help="folder of the finished FineTune-v1 (default <data root>/stage5/v1)")
    ap.add_argument("--property-cnn", default=None,
                    help="loss network and judge (default: <data root>/stage5/property_cnn/property_score_cnn.pth)")
    ap.add_argument("--evaluator", default=None, help="synthface evaluator weights (default: the profile's)")
    add_setting_flags(ap, constants(globals()))
    args = ap.parse_args(argv)
    paths = {k: getattr(args, k) for k in ("out", "labels", "init_dir", "property_cnn", "evaluator")}
    finetune_v3.main(args.profile, constants(globals()), args, paths)


if __name__ == "__main__":
    guarded(main)   # user errors: one "error: ..." line, exit code 2
