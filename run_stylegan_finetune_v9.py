"""Stage 6: StyleGAN-FineTune-v9 — the split-and-merge mapping, fine-tuned on the stage-2 kept set.

    python run_stylegan_finetune_v9.py                          # the profile's defaults (synthface: regressed start)
    python run_stylegan_finetune_v9.py --start original         # the original's N(0, 0.15²) start of the new branch
    python run_stylegan_finetune_v9.py --no-shipped             # train even when the shipped run applies
    python run_stylegan_finetune_v9.py --quick                  # smoke run: 1 epoch of 4 steps, small test
    torchrun --nproc_per_node 2 run_stylegan_finetune_v9.py     # gloo on CPU, nccl on GPU
    python run_stylegan_finetune_v9.py --profile celeba256      # the original's sizes (GPU recommended)

Starts from the finished FineTune-v1 (``<data root>/stage5/v1/``) and writes ``<data root>/stage6/v9/``:
``train_log.csv`` (the original's columns), ``concept_log.csv`` (stage-2 CNN means beside the
independent evaluator's shares per log point), per-epoch checkpoints and 7 x 10 grids, the resumable
``train_state.pth``, ``generator.pth`` / ``discriminator.pth``, ``acceptance.json`` (1,000 random
outputs of base G, v1 and v9), ``lineage.json``, ``run_config.json``, ``metrics.json``, ``report.md``.
Interrupted runs resume; a finished run only re-tests and reports; a fresh data root installs the
shipped run (``stage6.shipped``) when its settings and v1 match.

The constants below are the values that run; the profile's ``stage6.v9`` block overrides them by
name, flags override both (one flag per constant, ``--help``). Code: ``stages/finetune_v9.py``.
"""
import argparse

from pipeline.entry import guarded  # first: a missing package says how to set up
from pipeline.config import add_setting_flags, constants
from stages import finetune_v9

PROFILE = "synthface"
EPOCHS = 72                  # the original stopped after 72 epochs (loop bound 500)
BATCH_SIZE = 8               # global batch
LR = 1e-4                    # AdamW, G and D
WEIGHT_DECAY = 0.01          # AdamW's default
R1_GAMMA = 10.0
D_MAX_UPDATES = 4            # D updates per step while L_D >= D_RATIO x the last L_G
D_RATIO = 2.5
G_MAX_UPDATES = 4            # G updates per step while L_G >= G_RATIO x L_D
G_RATIO = 2.0
W_MOVING_DECAY = 0.995
RANDOMIZE_NOISE = True
OPTIMIZER_ALL_PARAMETERS = True   # the original's optimisers hold every parameter (02a M4)
START = "original"           # "original": new branch N(0, 0.15²); "regress": fitted before training (a deviation)
REGRESS_JUDGED = 1000        # regress: v1 outputs judged by the stage-2 CNNs
REGRESS_SAMPLES = 20000      # regress: (z, label) pairs the branch is fitted on
REGRESS_MARGIN = 1.0         # regress: margin past each concept hyperplane, in projection stds
REGRESS_MARGIN_GLASS = 0.0   # regress: the glasses margin (0: REGRESS_MARGIN)
REGRESS_MARGIN_AGE = 0.0     # regress: the age margin (0: REGRESS_MARGIN)
REGRESS_CONDITIONAL = ""     # regress: properties whose direction is taken among samples passing the others ("glass")
REGRESS_WIDEN = 1.0          # regress: spread the shifted w by this factor off the concept directions (1: off)
DROP_LABELS = False          # zero v1's label_weight, so outputs do not depend on the label (v9 trains with zeros)
MONITOR_IMAGES = 100         # per log point (idx % 50 == 0; epoch 0 also idx < 10 and idx % 25 == 0)
MONITOR_JPEG_QUALITY = 95    # OpenCV JPEG round trip before the CNNs (0: none)
MONITOR_CNN_TRAIN_MODE = False    # the original scored with dropout on (True)
SEED = 0
CHECKPOINT_EVERY = 50        # steps between resumable snapshots
MAX_STEPS_PER_EPOCH = 0      # 0: the whole kept set
DROP_LAST = False            # the original's loader keeps the last short batch
GRID_Z = 10
ACCEPTANCE_N = 1000          # random outputs per generator in acceptance.json
DEVICE = "auto"
THREADS = 0                  # torch intra-op threads (0: torch's default)
PROGRESS = True
QUICK = False
SHIPPED = True               # install the shipped run when it applies (--no-shipped: train)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    ap.add_argument("--out", default=None, help="output folder (default: <data root>/stage6/v9)")
    ap.add_argument("--v1-dir", default=None, help="the finished FineTune-v1 (default: <data root>/stage5/v1)")
    ap.add_argument("--evaluator", default=None, help="synthface evaluator weights (default: the profile's)")
    add_setting_flags(ap, constants(globals()))
    args = ap.parse_args(argv)
    paths = {k: getattr(args, k) for k in ("out", "v1_dir", "evaluator")}
    finetune_v9.main(args.profile, constants(globals()), args, paths)


if __name__ == "__main__":
    guarded(main)   # user errors: one "error: ..." line, exit code 2
