"""Stage 5c: StyleGAN-FineTune-v3 — the conditional VAE around the v1 generator (the adopted model).

    python run_stylegan_fine_tuning_v3.py
    python run_stylegan_fine_tuning_v3.py --reconstruction            # add a real reconstruction + KL objective
    python run_stylegan_fine_tuning_v3.py --gender-input signed --gender-folds fold0 --loss-cnn-mode train \\
        --dense0 reinit --test-z-source last_batches --test-dropout --lr-generator 1e-4 --lr-label 1e-4 \\
        --gen-labels image --prior-z-fraction 0 --select-judge primary --epochs 35 --t-max 10 \\
        --out runs/synthface/stage5/v3_original                        # the original's settings
    torchrun --nproc_per_node 2 run_stylegan_fine_tuning_v3.py        # DDP (gloo on CPU, nccl on GPU)

Needs the property CNN (``run_property_score_cnn.py``), the stage-2 gender fold models and,
by default, the finished FineTune-v1 (``--init-from base`` starts from the base generator).
Writes ``<data root>/stage5/v3/``: per-epoch generation tests, a checkpoint for every passing
epoch, the best one as ``generator.pth`` / ``encoder.pth`` / ``test_z.csv``, logs,
``metrics.json``, ``report.md``. Resumable; a finished run only re-tests and reports.
Every constant below can be overridden by a flag (``--help``); None = the profile's
``stage5.v3`` value, then the code default (``stylegan_modified.finetune_v3.V3Settings``).
"""
import argparse

from pipeline.profiles import DEFAULT_PROFILE, load_profile

PROFILE = DEFAULT_PROFILE
EPOCHS = None
BATCH_SIZE = None            # global batch (original 8)
LR_GENERATOR = None          # mapping dense layers (original 1e-4)
LR_LABEL = None              # label_weight (original 1e-4)
LR_ENCODER = None            # encoder (original 1e-5)
GEN_LABELS = None            # "image" (original), "shuffled" or "box": the generator's eyes / mouth / pose labels
GENDER_INPUT = None          # "unit" ([0, 1], the gender CNN's training range) or "signed" (original)
GENDER_FOLDS = None          # "mean" (the 5 fold models) or "fold0" (original)
LOSS_CNN_MODE = None         # "eval" or "train" (original: dropout on in the loss networks)
RECONSTRUCTION = None        # True: add reconstruction + KL terms
INIT_FROM = None             # "v1" (original) or "base"
TEST_Z_SOURCE = None         # "images", "last_batches" (original) or "prior"
SELECT_JUDGE = None          # the shipped epoch by "primary" (the property CNN, original) or "parsing" (stages 3-4)
SEED = None
LABELS = None                # label CSV (default: stage5/property_cnn/all_scores_v2_cnn.csv)
INIT_DIR = None              # folder of the finished v1 (default <data root>/stage5/v1)
PROPERTY_CNN = None          # default: stage5/property_cnn/property_score_cnn.pth
FEMALE_N = 300


def main(argv=None):
    from stylegan_modified.finetune_v3 import V3Settings
    from stylegan_modified.stage5_cli import (add_common_args, add_settings_args, add_stage_args, add_test_args,
                                              print_test_summary, resolve_settings, resolve_test, run_training_script)

    consts = {"epochs": EPOCHS, "batch_size": BATCH_SIZE, "lr_generator": LR_GENERATOR, "lr_label": LR_LABEL,
              "lr_encoder": LR_ENCODER, "gen_labels": GEN_LABELS, "gender_input": GENDER_INPUT,
              "gender_folds": GENDER_FOLDS, "loss_cnn_mode": LOSS_CNN_MODE, "reconstruction": RECONSTRUCTION,
              "init_from": INIT_FROM, "test_z_source": TEST_Z_SOURCE, "select_judge": SELECT_JUDGE, "seed": SEED}
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    add_settings_args(ap, V3Settings, consts)
    add_test_args(ap)
    add_common_args(ap)
    add_stage_args(ap, {"labels": LABELS, "init_dir": INIT_DIR, "property_cnn": PROPERTY_CNN, "female_n": FEMALE_N})
    args = ap.parse_args(argv)

    from stylegan_modified.stage5_v3 import run_v3_stage

    profile = load_profile(args.profile)
    s = resolve_settings(profile, "v3", V3Settings, args)
    m = run_training_script(run_v3_stage, profile, s, resolve_test(profile, args), args)
    if m is not None:
        print_test_summary(f"FineTune-v3: shipped epoch {m['best']['epoch']}; passing epochs {m['passing_epochs']}",
                           m["generation_test_best"])


if __name__ == "__main__":
    main()
