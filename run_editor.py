"""Face editor: a local page to edit a face's eyes, mouth and pose with any editing method, and save it.

Pick a seed (seed n = the z of stage-1 image n) or paste a z, a method and its generator, and move
the sliders: each move renders the edited image through the editing API (``editing.edit``) and
shows the judges' reading of it (synthface: the independent evaluator and the property CNN;
celeba256: the property CNN). Methods: the v3 label (FineTune-v3), SeFa on v9 (fitted at first
use), every direction set of a leaderboard folder (``run_direction_leaderboard.py``) and every
stage-7 run (``run_vectorfind_v9.py``) found in the data root. "save" writes the image, z, label,
α and method to ``<save root>/NNNN/`` (``z.csv`` and ``--label`` for ``run_fine_tuned_generator.py``;
``latent_codes_part1/2.csv`` as stage 7's QA rows; ``edit.json``; the direction set). Examples:
    python run_editor.py                            # then open http://127.0.0.1:8766/editor
    python run_editor.py --v9 shipped-v1 --board /tmp/board --stage7 runs/synthface/stage7/runs
    python run_editor.py --profile celeba256 --judges property_cnn
"""
import argparse
import sys

from pipeline.entry import check_environment, guarded  # first: checks the environment
from pipeline.config import add_setting_flags, constants, resolve
from pipeline import profiles

PROFILE = profiles.DEFAULT_PROFILE
HOST = "127.0.0.1"          # localhost only; another address exposes the editor to the network
PORT = 8766
V9 = "stage6/v9/generator.pth"    # v9 generator inside the data root ("shipped-v1": v9 from the shipped FineTune-v1)
JUDGES = ("evaluator", "property_cnn")   # measured beside the sliders (those the profile lacks are left out)
ALPHA_MAX = 3.0             # slider range ±ALPHA_MAX (calibrated α units; the v3 label: label units)
SEFA_PICK = 64              # samples that pick SeFa's component per property
THREADS = 2                 # torch intra-op threads of the server (0: torch's default)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    add_setting_flags(ap, constants(globals()))
    ap.add_argument("--save-root", default=None, help="folder of saved edits (default: <data root>/editor)")
    ap.add_argument("--board", default=None, help="leaderboard folder (default: <data root>/leaderboard)")
    ap.add_argument("--stage7", default=None, help="stage-7 runs folder (default: <data root>/stage7/runs)")
    args = ap.parse_args(argv)
    cfg = resolve(constants(globals()), None, None, args)

    # imported after parsing: --help answers without loading torch and the web stack
    from pipeline.runtime import apply_threads
    from web.editor import editor_app, serve

    if not 0 <= cfg["port"] < 65536:
        ap.error(f"--port {cfg['port']} is not a TCP port (0..65535)")
    if not cfg["alpha_max"] > 0:
        ap.error(f"--alpha-max {cfg['alpha_max']} must be > 0")
    apply_threads(cfg["threads"])
    try:
        profile = profiles.load_profile(args.profile)
        app, models = editor_app(profile, args.save_root, v9_source=cfg["v9"], board_dir=args.board,
                                 stage7_dir=args.stage7, judges=cfg["judges"], alpha_max=cfg["alpha_max"],
                                 sefa_pick=cfg["sefa_pick"])
    except (ValueError, RuntimeError, OSError) as exc:     # unknown profile, missing weights, bad direction files
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None
    print(f"editor on {profile.name}: methods " + ", ".join(models.choices) + "; judges " + ", ".join(models.judges)
          + "".join(f"\nnote: {n}" for n in models.notes))
    serve(app, cfg["host"], cfg["port"])


if __name__ == "__main__":
    check_environment(("fastapi", "uvicorn"))
    guarded(main)
