"""Pack finished stage-5 runs into the profile's shipped folder (``pipeline.shipped``).

    python -m stylegan_modified.ship                         # property_cnn, v1 and v3 of the default profile
    python -m stylegan_modified.ship v3 --profile synthface

Each run must be finished by its script at the settings it is to be shipped with; a fresh
checkout then installs it instead of retraining (the stage only repeats its test and report).
"""
from __future__ import annotations

import argparse

from pipeline.profiles import DEFAULT_PROFILE, load_profile

STAGES = ("property_cnn", "v1", "v4", "v3")
DEFAULT_STAGES = ("property_cnn", "v1", "v3")


def pack(profile, stage: str) -> dict:
    if stage == "property_cnn":
        from cnn.stage5_property import pack_property_run
        return pack_property_run(profile)
    if stage in ("v1", "v4"):
        from .stage5_gan import pack_gan_run
        return pack_gan_run(profile, stage)
    if stage == "v3":
        from .stage5_v3 import pack_v3_run
        return pack_v3_run(profile)
    raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # no `choices=`: argparse checks an empty nargs="*" list against them and refuses the default
    ap.add_argument("stages", nargs="*", help=f"any of {', '.join(STAGES)} (default: {' '.join(DEFAULT_STAGES)})")
    ap.add_argument("--profile", default=DEFAULT_PROFILE)
    args = ap.parse_args(argv)
    unknown = [st for st in args.stages if st not in STAGES]
    if unknown:
        ap.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    profile = load_profile(args.profile)
    from pipeline.shipped import shipped_dir
    for stage in args.stages or DEFAULT_STAGES:
        m = pack(profile, stage)
        size = sum((shipped_dir(profile, stage) / f).stat().st_size for f in m["files"])
        print(f"{stage}: {len(m['files'])} files, {size / 2**20:.2f} MiB -> {shipped_dir(profile, stage)}")


if __name__ == "__main__":
    main()
