"""Stage 4: property scores (eyes, mouth, pose, hair colour / length, background mean / std, hairstyle)
from the stage-3 face-parsing maps of the stage-2 filtered images.

Writes ``all_scores_v2.csv`` (2nd algorithm, N(0, 1), hairstyle as the last column), ``all_scores.csv``
(1st algorithm, for comparison), the raw values, the normalisation statistics, ``metrics.json`` and
``report.md`` under ``<data root>/stage4``. Re-runs reuse the per-image cache. Settings come in three
layers: the constants below, then the profile's ``stage4`` block if it has one (a named override
preset; each value it changes is printed at start), then flags, e.g.
    python compute_property_scores_v2.py
    python compute_property_scores_v2.py --algorithms v2 --batch-size 128
    python compute_property_scores_v2.py --v1-image original      # the 1st algorithm's misaligned colour image
The settings of the last run and their sources are written to <out>/run_config.json.
"""
import argparse

from pipeline.entry import guarded  # first: a missing package says how to set up
from pipeline.config import add_setting_flags, constants
from pipeline import profiles
from stages import scoring

PROFILE = profiles.DEFAULT_PROFILE
ALGORITHMS = ("v2", "v1")         # v2 = the 2nd algorithm (always); v1 = the 1st, for comparison
V1_IMAGE = "face"                 # colour image of the 1st algorithm: "face" (aligned crop) or "original"
                                  # (the stage-2 image resized to the map: the original's misaligned quirk)
HAIRSTYLE_LEFT_CHECK = "code"     # "code": the original's x-11 check (wraps at the left edge); "block": x-5
EYE_COMPONENTS = "all"            # "all": every eye-class pixel (original); "largest": the largest connected
                                  # component per eye only (robust to stray pixels of a noisy parser)
BATCH_SIZE = 32                   # images decoded and scored together
TRUE_MASKS = "auto"               # score the renderer's exact masks too: "auto" (when the profile has a world),
                                  # "yes" or "no"
EXAMPLES = 8                      # example maps in the report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    add_setting_flags(ap, constants(globals()))
    ap.add_argument("--stage1", default=None, help="stage-1 folder (default: <data root>/stage1)")
    ap.add_argument("--stage2", default=None, help="stage-2 folder (default: <data root>/stage2)")
    ap.add_argument("--stage3", default=None, help="stage-3 folder (default: <data root>/stage3)")
    ap.add_argument("--out", default=None, help="output folder (default: <data root>/stage4)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    flags = {k: v for k, v in vars(args).items()
             if k not in ("profile", "stage1", "stage2", "stage3", "out", "no_progress")}
    scoring.main(constants(globals()), args.profile, flags, stage1=args.stage1, stage2=args.stage2,
                 stage3=args.stage3, out=args.out, show_progress=not args.no_progress)


if __name__ == "__main__":
    guarded(main)   # user errors: one "error: ..." line, exit code 2
