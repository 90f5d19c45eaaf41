"""Stage 5b: StyleGAN-FineTune-v1 — the property-conditioned StyleGAN trained adversarially on the kept set.

    python run_stylegan_fine_tuning_v1.py                         # v1: 7 labels from stage4/all_scores.csv
    python run_stylegan_fine_tuning_v1.py --v4                    # v4: eyes / mouth / pose, from the finished v1
    python run_stylegan_fine_tuning_v1.py --fake-labels real --style-mixing-prob 0.9 --randomize-noise \\
        --dense0 reinit --label-weight fresh --head reinit --lr-generator 1e-4   # the original's settings
    torchrun --nproc_per_node 2 run_stylegan_fine_tuning_v1.py    # DDP (gloo on CPU, nccl on GPU)

Writes ``<data root>/stage5/v1/`` (``v4/``): train log, per-epoch grids and checkpoints, the
resumable ``train_state.pth``, ``generator.pth`` / ``discriminator.pth``, the generation test,
``metrics.json``, ``report.md``. Interrupted runs resume; a finished run only re-tests and reports.
Every constant below can be overridden by a flag (``--help``); None = the profile's
``stage5.v1`` / ``stage5.v4`` value, then the code default (``stylegan_modified.finetune_gan.GanSettings``).
"""
import argparse

from pipeline.profiles import DEFAULT_PROFILE, load_profile

PROFILE = DEFAULT_PROFILE
V4 = False                   # True: the 3-label FineTune-v4 configuration (same loop)
EPOCHS = None
BATCH_SIZE = None            # global batch (v1 16, v4 8 in the original)
LR_GENERATOR = None          # mapping dense layers (original 1e-4)
LR_LABEL = None              # label_weight (original 1e-4)
LR_DISCRIMINATOR = None      # D layers 12-14 at 256 px (original 1e-4)
R1_GAMMA = None              # 10
FAKE_LABELS = None           # "dataset" (independent draws) or "real" (the original: the real batch's labels)
STYLE_MIXING_PROB = None     # 0 (original 0.9)
RANDOMIZE_NOISE = None       # False (original True)
DENSE0 = None                # "keep" (pretrained z columns, zero label columns) or "reinit" (original)
LABEL_WEIGHT = None          # "auto" or "fresh" (original)
HEAD = None                  # "keep" or "reinit" (original)
SEED = None
LABELS = None                # label CSV (default: stage4/all_scores.csv; v4: the property CNN's)
INIT_DIR = None              # v4: folder holding the finished v1 (default <data root>/stage5/v1)
PROPERTY_CNN = None          # judge of the generation test (default: stage5/property_cnn/property_score_cnn.pth)
FEMALE_N = 300               # random outputs for the female share


def main(argv=None):
    from stylegan_modified.finetune_gan import GanSettings
    from stylegan_modified.stage5_cli import (add_common_args, add_settings_args, add_stage_args, add_test_args,
                                              print_test_summary, resolve_settings, resolve_test, run_training_script)

    consts = {"epochs": EPOCHS, "batch_size": BATCH_SIZE, "lr_generator": LR_GENERATOR, "lr_label": LR_LABEL,
              "lr_discriminator": LR_DISCRIMINATOR, "r1_gamma": R1_GAMMA, "fake_labels": FAKE_LABELS,
              "style_mixing_prob": STYLE_MIXING_PROB, "randomize_noise": RANDOMIZE_NOISE, "dense0": DENSE0,
              "label_weight": LABEL_WEIGHT, "head": HEAD, "seed": SEED}
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    ap.add_argument("--v4", action=argparse.BooleanOptionalAction, default=V4,
                    help="FineTune-v4: labels eyes / mouth / pose, started from the finished v1")
    add_settings_args(ap, GanSettings, consts, skip=("version",))
    add_test_args(ap)
    add_common_args(ap)
    add_stage_args(ap, {"labels": LABELS, "init_dir": INIT_DIR, "property_cnn": PROPERTY_CNN, "female_n": FEMALE_N})
    args = ap.parse_args(argv)

    from stylegan_modified.stage5_gan import run_gan_stage

    profile = load_profile(args.profile)
    version = "v4" if args.v4 else "v1"
    s = resolve_settings(profile, version, GanSettings, args, fixed={"version": version})
    m = run_training_script(run_gan_stage, profile, s, resolve_test(profile, args), args)
    if m is not None:
        fem = {k: v["share"] for k, v in m["female_share"].items() if isinstance(v, dict)}
        print_test_summary(f"FineTune-{version}: {m['steps']} steps, {m['train_seconds']} s; female share {fem}",
                           m["generation_test"])


if __name__ == "__main__":
    main()
