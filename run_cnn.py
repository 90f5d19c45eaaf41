"""Stage 2: gender / quality / age / glasses CNNs on the hand-labelled images, concept filter.

Trains the K-fold CNNs whose model files are missing (existing ones are loaded strictly),
scores every unlabelled image with the mean of the fold models, writes the per-property
and merged score CSVs and copies the images passing the filter into
``<data root>/stage2/filtered/``. Settings come in three layers: the constants below (the
spec's values, 02 §1.4 and 01 §2.4), then the profile's ``stage2`` block (a named override
preset; each value it changes is printed at start), then flags, e.g.
    python run_cnn.py --gender-min 0.9 --age-max 0.02
    python run_cnn.py --copy-hand-labelled --threads 2
Settings given per property are {gender, quality, age, glass} mappings; the resolved settings
and their sources are written to <out>/run_config.json.
"""
import argparse

from pipeline.entry import guarded  # first: a missing package says how to set up
from pipeline.config import add_setting_flags, constants
from pipeline import profiles
from stages import filtering

PROFILE = profiles.DEFAULT_PROFILE
PROPERTIES = ("gender", "quality", "age", "glass")
# filter (spec 02 §1.4, the v9 rule): keep an image when all four conditions hold
GENDER_MIN = 0.92          # female score >= this
QUALITY_MIN = 0.9          # good-quality score >= this
AGE_MAX = 0.008            # old score <= this
GLASS_MAX = 0.01           # glasses score <= this
COPY_HAND_LABELLED = False  # False: the v9 rule (the hand-labelled images are never copied); True: v1 rule
# hand-label files (relative to the data root)
LABEL_FILES = {"quality_and_gender": "stage1/synthesize_results_quality_and_gender.csv",
               "age_and_glass": "stage1/synthesize_results_age_and_glass.csv"}
# K-fold training (01 §2.4)
FOLDS = 5
SPLIT = "stratified"       # "stratified" (StratifiedKFold) or "kfold"
SEED = 0                   # fold splits, inits, shuffles
BATCH_SIZE = 16
VALID_BATCH_SIZE = 4
SCORE_BATCH_SIZE = 4
PATIENCE = 20              # early stopping
MAX_EPOCHS = 0             # 0: no cap (early stopping only)
T_MAX = 10                 # CosineAnnealingLR period
MAX_ATTEMPTS = 5           # retries of a fold whose best valid BCE misses its threshold
WEIGHT_DECAY = 0.01        # AdamW
PADDING = 0                # 0: the spec's unpadded convs
INIT = "pytorch"           # "pytorch" (default init) or "kaiming"
WIDTH = {"gender": 1.0, "quality": 1.0, "age": 1.0, "glass": 1.0}          # channel multiplier (or channel list)
PRETRAINED = {"gender": "", "quality": "", "age": "", "glass": ""}          # "" = from the init; else a state_dict file
LR = {"gender": 5e-6, "quality": 5e-6, "age": 2.5e-5, "glass": 5e-5}
THRESHOLD = {"gender": 0.35, "quality": 0.13, "age": 0.23, "glass": 0.10}   # success: min valid BCE <= this
CUT = {"gender": 0.5, "quality": 0.9, "age": 0.1, "glass": 0.1}             # positive iff score >= cut (metrics)
THREADS = 0                # 0: torch's default (all cores)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    add_setting_flags(ap, constants(globals()))
    ap.add_argument("--labels-quality-gender", default=None, help="hand-label CSV (img_name, quality, gender)")
    ap.add_argument("--labels-age-glass", default=None, help="hand-label CSV (img_name, age, glass)")
    ap.add_argument("--stage1", default=None, help="stage-1 folder (default: <data root>/stage1)")
    ap.add_argument("--out", default=None, help="output folder (default: <data root>/stage2)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    flags = {k: v for k, v in vars(args).items()
             if k not in ("profile", "stage1", "out", "no_progress", "labels_quality_gender", "labels_age_glass")}
    files = {g: f for g, f in (("quality_and_gender", args.labels_quality_gender),
                               ("age_and_glass", args.labels_age_glass)) if f}
    if files:
        flags["label_files"] = {**LABEL_FILES, **files}
    filtering.main(constants(globals()), args.profile, flags, stage1=args.stage1, out=args.out,
                   show_progress=not args.no_progress)


if __name__ == "__main__":
    guarded(main)   # user errors: one "error: ..." line, exit code 2
