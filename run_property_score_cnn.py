"""Stage 5a: the property-score CNN — train it on the stage-4 scores of the kept set, relabel the set.

Reads ``stage2/filtered/`` and ``stage4/all_scores_v2.csv``; writes ``stage5/property_cnn/``
(``property_score_cnn.pth``, ``all_scores_v2_cnn.csv`` = the labels of FineTune-v3 / v4, logs,
``metrics.json``, ``report.md``). Resumable per epoch; a finished training is not repeated
(a re-run relabels and reports). Edit the constants below or override them, e.g.
    python run_property_score_cnn.py --max-epochs 30 --lr 2e-4
    python run_property_score_cnn.py --relabel-mode train      # the original's dropout-on relabelling
Architecture and training defaults are profile data: the ``stage5.property_cnn`` block of
``profiles/<name>.json`` (None below = the profile's value).
"""
import argparse

from pipeline.profiles import DEFAULT_PROFILE, load_profile

PROFILE = DEFAULT_PROFILE
LR = None                  # AdamW learning rate (spec: 5e-5)
BATCH_SIZE = None          # training batch (spec: 16)
MAX_EPOCHS = None          # cap on the epochs (spec: none, early stopping only)
PATIENCE = None            # stop after this many epochs without a better validation criterion (spec: 20)
T_MAX = None               # cosine schedule half-period in epochs (spec: 10)
SEED = None                # split, initialisation, dropout and shuffling
RELABEL_MODE = None        # "eval" (default) or "train" (the original's dropout-on relabelling)
THREADS = None             # torch intra-op threads (None: the profile's, else torch's default)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    ap.add_argument("--lr", type=float, default=LR)
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    ap.add_argument("--max-epochs", type=int, default=MAX_EPOCHS)
    ap.add_argument("--patience", type=int, default=PATIENCE)
    ap.add_argument("--t-max", type=int, default=T_MAX)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--relabel-mode", choices=("eval", "train"), default=RELABEL_MODE)
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--quick", action="store_true", help="a few epochs only (smoke test)")
    ap.add_argument("--out", default=None, help="output folder (default: <data root>/stage5/property_cnn)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--no-shipped", action="store_true", help="train even when the shipped run applies")
    args = ap.parse_args(argv)

    import torch

    from cnn.stage5_property import property_cnn_config, run_property_stage

    profile = load_profile(args.profile)
    if args.no_shipped:
        profile.setdefault("stage5", {})["use_shipped"] = False
    cfg = property_cnn_config(profile)
    for key in ("lr", "batch_size", "max_epochs", "patience", "t_max", "seed", "relabel_mode", "threads"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.quick:
        cfg["max_epochs"] = 2
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    m = run_property_stage(profile, cfg, out_dir=args.out, show_progress=not args.no_progress)
    for p, v in m["held_out_vs_stage4"].items():
        truth = m.get("held_out_vs_truth", {}).get(p)
        print(f"{p:>16}: held-out r {v['r']:.4f}  MAE {v['mae']:.4f}"
              + (f"  r vs truth {truth:.4f}" if truth is not None else ""))


if __name__ == "__main__":
    main()
