"""Stage 3: face-parse the filtered images of stage 2.

Reads ``<data root>/stage2/filtered/NNNNNN.png`` and writes, per image, ``parsing_NNNNNN.png``
(class ids 0..10, 224x224), ``face_NNNNNN.png`` (the crop the parser saw) and
``parsing_visualization_NNNNNN.png`` to ``<data root>/stage3/segmentation_results/`` (plus
``true_mask_NNNNNN.png`` on the synthface profile), then ``metrics.json`` and ``report.md``.
The parser is described by the profile's ``segmentation`` block (backend and weights): synthface's
default segmenter on the whole frame, or (celeba256) MTCNN face crop + FaceXFormer. Settings come
in three layers: the constants below, then the same block's batch_size / on_no_face (a named
override preset; each value it changes is printed at start), then flags, e.g.
    python run_segmentation.py --batch-size 64 --threads 2
    python run_segmentation.py --profile celeba256 --on-no-face skip
A re-run skips finished images; an interrupted run resumes. The settings and their sources are
recorded in <out>/run_config.json.
"""
import argparse

from pipeline.entry import guarded  # first: a missing package says how to set up
from pipeline.config import add_setting_flags, constants
from pipeline import profiles
from stages import parsing

PROFILE = profiles.DEFAULT_PROFILE
BATCH_SIZE = 16            # images per chunk; results do not depend on it (presets: synthface 32, celeba256 8)
ON_NO_FACE = "whole_frame"  # "whole_frame": parse the whole image (flagged); "skip": leave images without a face out
MAX_IMAGES = 0             # 0: every filtered image; N: only the first N (by image number)
THREADS = 0                # 0: torch's default (all cores)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    add_setting_flags(ap, constants(globals()))
    ap.add_argument("--input", default=None, help="image folder (default: <data root>/stage2/filtered)")
    ap.add_argument("--latents", default=None, help="stage-1 latents.csv (default: <data root>/stage1/latents.csv)")
    ap.add_argument("--out", default=None, help="output folder (default: <data root>/stage3)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k not in ("profile", "input", "latents", "out", "no_progress")}
    parsing.main(constants(globals()), args.profile, flags, input_dir=args.input, latents=args.latents,
                 out=args.out, show_progress=not args.no_progress)


if __name__ == "__main__":
    guarded(main)   # user errors: one "error: ..." line, exit code 2
