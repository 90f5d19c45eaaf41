"""Stage 5c: StyleGAN-FineTune-v3 — the conditional VAE around the v1 generator (the adopted model).

    python run_stylegan_fine_tuning_v3.py
    python run_stylegan_fine_tuning_v3.py --reconstruction            # add a real reconstruction + KL objective
    python run_stylegan_fine_tuning_v3.py --gender-input signed --gender-folds fold0 --loss-cnn-mode train \\
        --dense0 reinit --test-z-source last_batches --test-dropout --lr-generator 1e-4 --lr-label 1e-4 \\
        --gen-labels image                                             # the original's settings
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
SEED = None
LABELS = None                # label CSV (default: stage5/property_cnn/all_scores_v2_cnn.csv)
INIT_DIR = None              # folder of the finished v1 (default <data root>/stage5/v1)
PROPERTY_CNN = None          # default: stage5/property_cnn/property_score_cnn.pth
FEMALE_N = 300


def main(argv=None):
    from stylegan_modified.finetune_v3 import V3Settings
    from stylegan_modified.stage5_cli import (add_common_args, add_settings_args, add_test_args, resolve_settings,
                                              resolve_test)

    consts = {"epochs": EPOCHS, "batch_size": BATCH_SIZE, "lr_generator": LR_GENERATOR, "lr_label": LR_LABEL,
              "lr_encoder": LR_ENCODER, "gen_labels": GEN_LABELS, "gender_input": GENDER_INPUT,
              "gender_folds": GENDER_FOLDS, "loss_cnn_mode": LOSS_CNN_MODE, "reconstruction": RECONSTRUCTION,
              "init_from": INIT_FROM, "test_z_source": TEST_Z_SOURCE, "seed": SEED}
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    add_settings_args(ap, V3Settings, consts)
    add_test_args(ap)
    add_common_args(ap)
    ap.add_argument("--labels", default=LABELS)
    ap.add_argument("--init-dir", default=INIT_DIR)
    ap.add_argument("--property-cnn", default=PROPERTY_CNN)
    ap.add_argument("--female-n", type=int, default=FEMALE_N)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run: 1 epoch of 4 steps, 3 test z")
    args = ap.parse_args(argv)

    import torch

    from stylegan_modified.distributed import init_distributed, shutdown
    from stylegan_modified.stage5_v3 import run_v3_stage

    profile = load_profile(args.profile)
    s = resolve_settings(profile, "v3", V3Settings, args)
    test = resolve_test(profile, args)
    female_n = args.female_n
    if args.quick:
        s.epochs, s.checkpoint_every, s.max_steps_per_epoch = 1, 2, 4
        test.update(n_z=3)
        female_n = 20
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = init_distributed(args.device)
    try:
        m = run_v3_stage(profile, s, test, out_dir=args.out, label_file=args.labels,
                         property_cnn_path=args.property_cnn, init_dir=args.init_dir, evaluator=args.evaluator,
                         ctx=ctx, female_n=female_n, show_progress=not args.no_progress)
    finally:
        shutdown(ctx)
    if m is not None:
        t = m["generation_test_best"]
        print(f"FineTune-v3: shipped epoch {m['best']['epoch']}; passing epochs {m['passing_epochs']}")
        for name, summ in t["judges"].items():
            print(f"  {name}: {summ['passes']}/{t['n_z']} pass; mean r "
                  + ", ".join(f"{p} {summ['mean'][p + '_corr']:.3f}" for p in ("eyes", "mouth", "pose"))
                  + "; best r " + ", ".join(f"{summ['best'][p + '_corr']:.3f}" for p in ("eyes", "mouth", "pose")))


if __name__ == "__main__":
    main()
