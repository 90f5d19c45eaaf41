"""Stage 4: property scores (eyes, mouth, pose, hair colour / length, background mean / std, hairstyle)
from the stage-3 face-parsing maps of the stage-2 filtered images.

Writes ``all_scores_v2.csv`` (2nd algorithm, N(0, 1), hairstyle as the last column), ``all_scores.csv``
(1st algorithm, for comparison), the raw values, the normalisation statistics, ``metrics.json`` and
``report.md`` under ``<data root>/stage4``. Re-runs reuse the per-image cache. Examples:
    python compute_property_scores_v2.py
    python compute_property_scores_v2.py --algorithms v2 --batch-size 128
    python compute_property_scores_v2.py --v1-image original      # the 1st algorithm's misaligned colour image
"""
import argparse

from pipeline.profiles import DEFAULT_PROFILE, load_profile

PROFILE = DEFAULT_PROFILE
ALGORITHMS = ("v2", "v1")         # v2 = the 2nd algorithm (always); v1 = the 1st, for comparison
V1_IMAGE = "face"                 # colour image of the 1st algorithm: "face" (aligned crop) or "original"
                                  # (the stage-2 image resized to the map: the original's misaligned quirk)
HAIRSTYLE_LEFT_CHECK = "code"     # "code": the original's x-11 check (wraps at the left edge); "block": x-5
EYE_COMPONENTS = "all"            # "all": every eye-class pixel (original); "largest": the largest connected
                                  # component per eye only (robust to stray pixels of a noisy parser)
BATCH_SIZE = 32                   # images decoded and scored together
TRUE_MASKS = None                 # None: score the renderer's exact masks too when the profile has a world
EXAMPLES = 8                      # example maps in the report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    ap.add_argument("--algorithms", default=",".join(ALGORITHMS), help="comma-separated: v2 or v2,v1")
    ap.add_argument("--v1-image", choices=("face", "original"), default=V1_IMAGE)
    ap.add_argument("--hairstyle-left-check", choices=("code", "block"), default=HAIRSTYLE_LEFT_CHECK)
    ap.add_argument("--eye-components", choices=("all", "largest"), default=EYE_COMPONENTS)
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    ap.add_argument("--true-masks", action=argparse.BooleanOptionalAction, default=TRUE_MASKS)
    ap.add_argument("--examples", type=int, default=EXAMPLES)
    ap.add_argument("--stage1", default=None, help="stage-1 folder (default: <data root>/stage1)")
    ap.add_argument("--stage2", default=None, help="stage-2 folder (default: <data root>/stage2)")
    ap.add_argument("--stage3", default=None, help="stage-3 folder (default: <data root>/stage3)")
    ap.add_argument("--out", default=None, help="output folder (default: <data root>/stage4)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    from segmentation.stage4 import Stage4Settings, run_stage4

    profile = load_profile(args.profile)
    settings = Stage4Settings(algorithms=tuple(a.strip() for a in args.algorithms.split(",") if a.strip()),
                              v1_image=args.v1_image, hairstyle_left_check=args.hairstyle_left_check,
                              eye_components=args.eye_components,
                              batch_size=args.batch_size, true_masks=args.true_masks, examples=args.examples)
    m = run_stage4(profile, settings, stage1_dir=args.stage1, stage2_dir=args.stage2, stage3_dir=args.stage3,
                   out_dir=args.out, show_progress=not args.no_progress)
    c = m["counts"]
    print(f"stage 4: {c['images']} images ({c['computed_this_run']} scored, {c['from_cache']} from the cache), "
          f"{m['throughput']['compute_images_per_s']} images/s, {m['timings']['total_s']:.1f} s")
    if m.get("truth"):
        t = m["truth"]
        for src in ("parsed", "true_mask"):
            if src in t:
                v2 = t[src]["v2"]
                parts = [f"{k} {v['pearson']:.3f}" for k, v in v2.items()
                         if k != "hairstyle" and v["pearson"] is not None]
                auc = v2.get("hairstyle", {}).get("auc")
                print(f"vs truth ({src}): r " + ", ".join(parts) + (f"; hairstyle AUC {auc:.3f}" if auc else ""))


if __name__ == "__main__":
    main()
