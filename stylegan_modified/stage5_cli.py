"""Command-line plumbing of the stage-5 scripts: settings = code defaults < profile ``stage5`` block < flags.

Every field of a settings dataclass becomes a flag (``lr_generator`` -> ``--lr-generator``;
booleans take ``--x`` / ``--no-x``); a flag left unset (None) keeps the profile's value, and
a key the profile does not set keeps the code default.
"""
from __future__ import annotations

import argparse
import dataclasses

from .stage5_data import stage5_settings

TEST_DEFAULTS = {"n_z": 30, "z_seed": 0, "batch_size": 50, "round_decimals": 4, "save_images": False}


def add_settings_args(ap: argparse.ArgumentParser, cls, constants: dict | None = None, skip=()) -> None:
    constants = constants or {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = constants.get(f.name)
        if isinstance(f.default, bool):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            kind = _kind(f)
            ap.add_argument(flag, type=kind, default=default, help=f"default: profile / {f.default!r}")


def _kind(f: dataclasses.Field):
    """The argparse type of a field: its default's type, or the first of int / float in its annotation."""
    if f.default is not None:
        return type(f.default)
    ann = str(f.type)
    return int if "int" in ann else float if "float" in ann else str


def resolve_settings(profile, section: str, cls, args: argparse.Namespace, fixed: dict | None = None):
    """The dataclass instance for ``section`` (see the module docstring); ``fixed`` wins over all."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    cfg = stage5_settings(profile, section, defaults)
    for name in defaults:
        v = getattr(args, name, None)
        if v is not None:
            cfg[name] = v
    cfg.update(fixed or {})
    return cls(**cfg)


def add_test_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--test-n-z", type=int, default=None, help="latents of the generation test (default 30)")
    ap.add_argument("--test-z-seed", type=int, default=None)
    ap.add_argument("--test-batch-size", type=int, default=None)
    ap.add_argument("--test-save-images", action=argparse.BooleanOptionalAction, default=None,
                    help="write all test images as PNG (the original did)")


def resolve_test(profile, args: argparse.Namespace) -> dict:
    cfg = stage5_settings(profile, "generation_test", dict(TEST_DEFAULTS))
    for name in ("n_z", "z_seed", "batch_size", "save_images"):
        v = getattr(args, f"test_{name}", None)
        if v is not None:
            cfg[name] = v
    return cfg


def add_common_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads per process")
    ap.add_argument("--evaluator", default=None, help="synthface evaluator weights (default: the profile's)")
    ap.add_argument("--out", default=None, help="output folder (default: <data root>/stage5/<version>)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--no-shipped", action="store_true",
                    help="train even when a shipped run applies (sets the profile's stage5.use_shipped false)")


def force_training(profile, args: argparse.Namespace) -> None:
    """``--no-shipped``: the profile's ``stage5.use_shipped`` = false, so no shipped run is installed."""
    if getattr(args, "no_shipped", False):
        profile.setdefault("stage5", {})["use_shipped"] = False


def add_stage_args(ap: argparse.ArgumentParser, defaults: dict) -> None:
    """The inputs every training script names (label CSV, start folder, property CNN) and the female count."""
    ap.add_argument("--labels", default=defaults.get("labels"), help="label CSV (default: the stage's)")
    ap.add_argument("--init-dir", default=defaults.get("init_dir"),
                    help="folder of the finished FineTune-v1 (default <data root>/stage5/v1)")
    ap.add_argument("--property-cnn", default=defaults.get("property_cnn"),
                    help="default: <data root>/stage5/property_cnn/property_score_cnn.pth")
    ap.add_argument("--female-n", type=int, default=defaults.get("female_n", 300),
                    help="random outputs for the female share")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run: 1 epoch of 4 steps, 3 test z")


def run_training_script(run_fn, profile, s, test: dict, args: argparse.Namespace):
    """Threads, quick mode, the distributed context (always shut down), then ``run_fn``; returns its metrics
    (None on the processes other than rank 0)."""
    import torch

    from .distributed import init_distributed, shutdown
    female_n = args.female_n
    if args.quick:
        s.epochs, s.checkpoint_every, s.max_steps_per_epoch = 1, 2, 4
        test.update(n_z=3)
        female_n = 20
    if args.threads:
        torch.set_num_threads(args.threads)
    force_training(profile, args)
    ctx = init_distributed(args.device)
    try:
        return run_fn(profile, s, test, out_dir=args.out, label_file=args.labels, property_cnn_path=args.property_cnn,
                      init_dir=args.init_dir, evaluator=args.evaluator, ctx=ctx, female_n=female_n,
                      show_progress=not args.no_progress)
    finally:
        shutdown(ctx)


def print_test_summary(title: str, test: dict | None) -> None:
    print(title)
    if not test:
        return
    for name, summ in test["judges"].items():
        print(f"  {name}: {summ['passes']}/{test['n_z']} pass; mean r "
              + ", ".join(f"{p} {summ['mean'][p + '_corr']:.3f}" for p in ("eyes", "mouth", "pose"))
              + "; best r " + ", ".join(f"{summ['best'][p + '_corr']:.3f}" for p in ("eyes", "mouth", "pose")))
