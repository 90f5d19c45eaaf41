"""Stage 2: gender / quality / age / glasses CNNs on the hand-labelled images, concept filter.

Trains the K-fold CNNs whose model files are missing (existing ones are loaded strictly),
scores every unlabelled image with the mean of the fold models, writes the per-property
and merged score CSVs and copies the images passing the filter into
``<data root>/stage2/filtered/``. Edit the constants below or override them, e.g.
    python run_cnn.py --gender-min 0.9 --age-max 0.02
    python run_cnn.py --copy-hand-labelled --threads 2
Training settings (widths, learning rates, epochs, folds, seed) are profile data: the
``stage2`` block of ``profiles/<name>.json``.
"""
import argparse

from pipeline.profiles import DEFAULT_PROFILE, load_profile

PROFILE = DEFAULT_PROFILE
PROPERTIES = ("gender", "quality", "age", "glass")
# filter (spec 02 §1.4, the v9 rule): keep an image when all four conditions hold. None: the
# profile's stage2.filter value (synthface raises age / glass, see its note), else the spec's
# (gender >= 0.92, quality >= 0.9, age <= 0.008, glass <= 0.01: cnn.stage2.DEFAULT_FILTER).
GENDER_MIN = None          # female score >= this
QUALITY_MIN = None         # good-quality score >= this
AGE_MAX = None             # old score <= this
GLASS_MAX = None           # glasses score <= this
COPY_HAND_LABELLED = False  # False: the v9 rule (the hand-labelled images are never copied); True: v1 rule
SEED = None                # None: the profile's stage2.seed (fold splits, inits, shuffles)
SCORE_BATCH_SIZE = None    # None: the profile's stage2.score_batch_size
THREADS = None             # None: torch's default (all cores)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    ap.add_argument("--properties", default=",".join(PROPERTIES), help="comma-separated subset of gender,quality,age,glass")
    ap.add_argument("--gender-min", type=float, default=GENDER_MIN)
    ap.add_argument("--quality-min", type=float, default=QUALITY_MIN)
    ap.add_argument("--age-max", type=float, default=AGE_MAX)
    ap.add_argument("--glass-max", type=float, default=GLASS_MAX)
    ap.add_argument("--copy-hand-labelled", action=argparse.BooleanOptionalAction, default=COPY_HAND_LABELLED)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--score-batch-size", type=int, default=SCORE_BATCH_SIZE)
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--labels-quality-gender", default=None, help="hand-label CSV (img_name, quality, gender)")
    ap.add_argument("--labels-age-glass", default=None, help="hand-label CSV (img_name, age, glass)")
    ap.add_argument("--stage1", default=None, help="stage-1 folder (default: <data root>/stage1)")
    ap.add_argument("--out", default=None, help="output folder (default: <data root>/stage2)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from cnn.stage2 import Stage2Settings, filter_rules, run_stage2

    if args.threads:
        torch.set_num_threads(args.threads)
    profile = load_profile(args.profile)
    label_files = {}
    if args.labels_quality_gender:
        label_files["quality_and_gender"] = args.labels_quality_gender
    if args.labels_age_glass:
        label_files["age_and_glass"] = args.labels_age_glass
    settings = Stage2Settings(
        properties=tuple(p.strip() for p in args.properties.split(",") if p.strip()),
        filter=filter_rules(profile, gender_min=args.gender_min, quality_min=args.quality_min,
                            age_max=args.age_max, glass_max=args.glass_max),
        copy_hand_labelled=args.copy_hand_labelled, seed=args.seed, label_files=label_files or None,
        score_batch_size=args.score_batch_size)
    m = run_stage2(profile, settings, stage1_dir=args.stage1, out_dir=args.out, show_progress=not args.no_progress)
    c = m["counts"]
    print(f"stage 2: {c['scored']} images scored, {c['kept']} kept ({c['kept_share_of_scored']:.1%}), "
          f"{m['timings']['total_s']:.1f} s")
    if m.get("truth"):
        t = m["truth"]
        parts = [f"{p} acc {t[p]['accuracy_at_0.5']:.4f}" for p in ("gender", "age", "glass") if p in t]
        if "quality" in t:
            parts.append(f"defect recall {t['quality']['defect_recall_at_filter']:.4f} / good precision "
                         f"{t['quality']['good_precision_at_filter']:.4f}")
        if t["kept"]["purity_concept"] is not None:
            parts.append(f"kept purity {t['kept']['purity_concept']:.4f}")
        print("against truth: " + ", ".join(parts))


if __name__ == "__main__":
    main()
