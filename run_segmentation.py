"""Stage 3: face-parse the filtered images of stage 2.

Reads ``<data root>/stage2/filtered/NNNNNN.png`` and writes, per image, ``parsing_NNNNNN.png``
(class ids 0..10, 224x224), ``face_NNNNNN.png`` (the crop the parser saw) and
``parsing_visualization_NNNNNN.png`` to ``<data root>/stage3/segmentation_results/`` (plus
``true_mask_NNNNNN.png`` on the synthface profile), then ``metrics.json`` and ``report.md``.
The parser is the profile's ``segmentation`` block: synthface's default segmenter on the whole
frame, or (celeba256) MTCNN face crop + FaceXFormer. Edit the constants below or override them:
    python run_segmentation.py --batch-size 64 --threads 2
    python run_segmentation.py --profile celeba256 --on-no-face skip
A re-run skips finished images; an interrupted run resumes.
"""
import argparse

from pipeline.profiles import DEFAULT_PROFILE, load_profile

PROFILE = DEFAULT_PROFILE
BATCH_SIZE = None      # None: the profile's segmentation.batch_size (synthface 32, celeba256 8)
ON_NO_FACE = None      # None: the profile's (whole_frame); "skip" leaves images without a face out
MAX_IMAGES = None      # None: every filtered image; N: only the first N (by image number)
THREADS = None         # None: torch's default (all cores)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    ap.add_argument("--on-no-face", choices=("whole_frame", "skip"), default=ON_NO_FACE)
    ap.add_argument("--max-images", type=int, default=MAX_IMAGES)
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--input", default=None, help="image folder (default: <data root>/stage2/filtered)")
    ap.add_argument("--latents", default=None, help="stage-1 latents.csv (default: <data root>/stage1/latents.csv)")
    ap.add_argument("--out", default=None, help="output folder (default: <data root>/stage3)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from segmentation.stage3 import Stage3Settings, run_stage3

    if args.threads:
        torch.set_num_threads(args.threads)
    profile = load_profile(args.profile)
    settings = Stage3Settings(batch_size=args.batch_size, on_no_face=args.on_no_face, max_images=args.max_images)
    m = run_stage3(profile, settings, input_dir=args.input, latents_path=args.latents, out_dir=args.out,
                   show_progress=not args.no_progress)
    c = m["counts"]
    print(f"stage 3: {c['inputs']} images, {c['written_this_run']} parsed this run, {c['already_complete']} already "
          f"done, {m['face_detect_failures']['count']} face-detect failures, {m['images_per_s']} images/s")
    if m.get("truth"):
        t = m["truth"]
        print(f"against the true masks: mean IoU {t['mean_iou']:.4f} over {t['images']} images; "
              + ", ".join(f"{k} {v:.3f}" for k, v in t["per_class"].items() if v is not None))


if __name__ == "__main__":
    main()
