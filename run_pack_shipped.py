"""Pack finished stage-5 runs into the profile's shipped folder (``synthface/weights/stage5/``),
and the stage-6 FineTune-v9 run into ``stage6.shipped`` (``synthface/weights/stage6/v9/``).

    python run_pack_shipped.py                          # property_cnn, v1 and v3 of the default profile
    python run_pack_shipped.py v3 --profile synthface
    python run_pack_shipped.py v9                       # int8 deltas against the local FineTune-v1

Each run must be finished by its script at the settings it is to be shipped with; a fresh
checkout then installs it instead of retraining (the stage only repeats its test and report).
Code: ``stages/shipping.py``.
"""
import argparse

from pipeline.entry import guarded  # first: a missing package says how to set up
from stages import shipping

PROFILE = "synthface"
STAGES = ("property_cnn", "v1", "v3")     # packed when no stage is named


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # no `choices=`: argparse checks an empty nargs="*" list against them and refuses the default
    ap.add_argument("stages", nargs="*", help=f"any of {', '.join(shipping.STAGES)} (default: {' '.join(STAGES)})")
    ap.add_argument("--profile", default=PROFILE)
    args = ap.parse_args(argv)
    try:
        shipping.main(args.profile, args.stages or STAGES)
    except ValueError as exc:
        ap.error(str(exc))


if __name__ == "__main__":
    guarded(main)   # user errors: one "error: ..." line, exit code 2
