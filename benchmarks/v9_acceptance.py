"""FineTune-v9 acceptance figures (issue 17) for a finished or installed stage-6 run.

    .venv/bin/python benchmarks/v9_acceptance.py                       # <data root>/stage6/v9, 1,000 outputs
    .venv/bin/python benchmarks/v9_acceptance.py --n 2000 --seed 1 --json /tmp/acc.json

Loads the run's ``generator.pth`` (strict), the FineTune-v1 it started from, the profile's base G,
the stage-2 kept set and fold models and the independent synthface evaluator, then prints, for
base G / v1 / v9 on the same random (z, label ~ N(0, I)): the evaluator's female / good quality /
young / no-glasses shares, the stage-2 CNN means, each continuous property's std over the outputs
against the kept set's (≥ 0.8 x), the Fréchet distance of the evaluator's penultimate features to
the kept set's, and the new branch's use (‖w2'‖/‖w1'‖, variance shares). The stage writes the
same figures to ``acceptance.json`` (:func:`evaluation.v9_acceptance.acceptance`).
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run as a script from anywhere

from evaluation.networks import load_evaluator_for
from evaluation.v9_acceptance import acceptance
from pipeline.checkpoint import read_checkpoint
from pipeline.profiles import load_profile
from stages.bases import base_generator_state, build_configs
from stages.finetune_v9 import kept_images, paths_of
from stylegan_modified.loading import load_generator
from stylegan_modified.v9 import load_v9_generator
from training.v9 import load_monitor_cnns


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="synthface")
    ap.add_argument("--out", default=None, help="the stage-6 run folder (default <data root>/stage6/v9)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    prof = load_profile(args.profile)
    p = paths_of(prof, args.out)
    gcfg, _ = build_configs(prof)
    g9 = load_v9_generator(p["out"] / "generator.pth", gcfg)
    g1 = load_generator(read_checkpoint(p["v1"] / "generator.pth"), gcfg, "v1").eval()
    kept = kept_images(p["stage2"], int(prof["resolution"]), False)
    acc = acceptance(g9, g1, base_generator_state(prof)[0], kept, load_monitor_cnns(prof, p["stage2"]),
                     load_evaluator_for(prof), n=args.n, seed=args.seed)
    for name, rec in acc["generators"].items():
        print(f"{name}: evaluator {rec.get('evaluator_shares')}; stage-2 CNN means {rec['cnn_means']}")
        if "evaluator_std" in rec:
            print(f"  std / kept std {rec['std_ratio_to_kept']}; Fréchet to kept {rec['frechet_to_kept']}")
    if "kept_set" in acc:
        print(f"kept set ({acc['kept_set']['images']} images): evaluator {acc['kept_set']['evaluator_shares']}; "
              f"std {acc['kept_set']['evaluator_std']}")
    print(f"branch (end): {acc['branch_end']}")
    print(f"checks: {acc.get('checks')}")
    if args.json:
        Path(args.json).write_text(json.dumps(acc, indent=2))


if __name__ == "__main__":
    main()
