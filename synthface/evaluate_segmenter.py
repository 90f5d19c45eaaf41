"""Accuracy of the synthface default segmenter against the renderer's exact masks.

    python -m synthface.evaluate_segmenter                     # 500 held-out z, shipped weights and generator
    python -m synthface.evaluate_segmenter --segmenter /tmp/s/seg.pth --n 200 --out /tmp/eval
    python -m synthface.evaluate_segmenter --seed 31337      # the development stream used while training

For ``n`` latents of the held-out evaluation stream (``EVAL_SEED``; never used for training or
for choosing settings), the segmenter parses

* the renders ``render(truth(z))`` (its ceiling: the images it was trained on, without degradation),
* the same renders degraded by the training augmentation (seeded by ``seed``): soft, noisy,
  JPEG-like images with *exact* geometry: roughly what the parser would score on a generator that
  drew every part in the right place but as softly as the interim one does, and
* the generated images ``G(z)`` of the profile's generator,

through the exact stage-3 path (whole frame -> 224x224 bicubic crop -> parser -> 224x224 class map),
and each map is scored against the true mask ``render(truth(z))[1]`` resized to 224 (nearest).
Reported: dataset-level IoU per class and their mean over the 11 classes, pixel accuracy,
per-image mean IoU. On G(z) the figure mixes two errors, the segmenter's and the generator's
(a generator that draws the eyes in the wrong place lowers it however good the parser is).

Writes ``metrics.json``, ``report.md`` and ``report/examples.png`` to ``--out``
(default ``<data root>/segmenter_fidelity``).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.io import atomic_write_json, sha256_file
from pipeline.profiles import REPO_ROOT, load_profile
from pipeline.reports import contact_sheet_figure, markdown_table, write_report
from segmentation.synth_segmenter import (CROP_SIZE, AugmentSettings, augment, confusion_matrix, iou_scores,
                                          load_segmenter, parse_crops, per_image_mean_iou, resize_mask_nearest,
                                          whole_frame_crops)
from pipeline.vocabulary import CLASS_NAMES, PALETTE
from stylegan.sampling import build_generator, generate_uint8
from synthface.renderer import render_batch
from synthface.truth import world as world_map
from synthface.world import WorldMap

SEGMENTER_WEIGHTS = REPO_ROOT / "synthface" / "weights" / "segmenter.pth"
EVAL_SEED = 777_001          # held-out z stream of this evaluation
N_EVAL = 500


def eval_latents(n: int = N_EVAL, z_dim: int = 256, seed: int = EVAL_SEED) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, z_dim), dtype=np.float32)


def parse_frames(model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """The stage-3 synthface path on uint8 frames [N, R, R, 3]: uint8 class maps [N, 224, 224]."""
    out = []
    for i in range(0, len(images), batch_size):
        out.append(parse_crops(model, whole_frame_crops(images[i:i + batch_size], CROP_SIZE), batch_size))
    return np.concatenate(out)


def score_maps(pred: np.ndarray, true_masks: np.ndarray) -> dict:
    """IoU of 224 maps against true masks of any size (resized nearest to 224)."""
    true = np.stack([resize_mask_nearest(m, CROP_SIZE) for m in true_masks])
    res = iou_scores(confusion_matrix(pred, true), CLASS_NAMES)
    per = per_image_mean_iou(pred, true)
    res["per_image_mean_iou"] = {"mean": float(per.mean()), "median": float(np.median(per)), "min": float(per.min())}
    return res


def evaluate_segmenter(model, generator=None, world: WorldMap | None = None, n: int = N_EVAL, seed: int = EVAL_SEED,
                       resolution: int = 128, batch_size: int = 32, keep_maps: int = 0) -> dict:
    """IoU on renders and (when ``generator`` is given) on G(z) for ``n`` latents of stream ``seed``."""
    world = world or world_map(256, 0)
    z = eval_latents(n, world.z_dim, seed)
    rendered, masks = render_batch(world.truth(z), resolution=resolution)
    out = {"n": n, "seed": seed, "resolution": resolution}
    with torch.inference_mode():
        pred_r = parse_frames(model, rendered, batch_size)
        out["renders"] = score_maps(pred_r, masks)
        degraded = augment(rendered, np.random.default_rng([seed, 1]), AugmentSettings())
        out["augmented_renders"] = score_maps(parse_frames(model, degraded, batch_size), masks)
        if generator is not None:
            generated = np.concatenate([generate_uint8(generator, z[i:i + 32]) for i in range(0, n, 32)])
            pred_g = parse_frames(model, generated, batch_size)
            out["generated"] = score_maps(pred_g, masks)
    if keep_maps:
        out["_examples"] = {"rendered": rendered[:keep_maps], "masks": masks[:keep_maps], "pred_r": pred_r[:keep_maps]}
        if generator is not None:
            out["_examples"].update(generated=generated[:keep_maps], pred_g=pred_g[:keep_maps])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="synthface")
    ap.add_argument("--segmenter", default=str(SEGMENTER_WEIGHTS))
    ap.add_argument("--n", type=int, default=N_EVAL)
    ap.add_argument("--seed", type=int, default=EVAL_SEED)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-generator", action="store_true", help="renders only")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    profile = load_profile(args.profile)
    out = Path(args.out) if args.out else profile.stage_dir("segmenter_fidelity")
    world = world_map(profile["generator"]["z_dim"], profile["world_seed"])
    t0 = time.perf_counter()
    model = load_segmenter(args.segmenter)
    g = None
    if not args.no_generator:
        g = build_generator(profile)
    res = evaluate_segmenter(model, g, world, args.n, args.seed, profile["resolution"], args.batch_size, keep_maps=8)
    ex = res.pop("_examples")
    gen_ckpt = profile.path(profile["generator_checkpoint"]) if g is not None else None
    metrics = {**res, "segmenter": args.segmenter, "segmenter_sha256": sha256_file(args.segmenter),
               "generator_checkpoint": str(profile["generator_checkpoint"]) if g is not None else None,
               "generator_sha256": sha256_file(gen_ckpt) if gen_ckpt else None,
               "threads": args.threads, "seconds": round(time.perf_counter() - t0, 1)}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", metrics)
    tiles, titles = [], []
    for i in range(len(ex["masks"])):
        tiles += [ex["rendered"][i], PALETTE[ex["pred_r"][i]]]
        titles += ["render", "parsing"]
        if g is not None:
            tiles += [ex["generated"][i], PALETTE[ex["pred_g"][i]]]
            titles += ["G(z)", "parsing"]
        tiles.append(PALETTE[resize_mask_nearest(ex["masks"][i], CROP_SIZE)])
        titles.append("true mask")
    sheet = contact_sheet_figure(tiles, titles, out / "report" / "examples.png", ncols=5 if g is not None else 3,
                                 suptitle="held-out z: render, its parsing, G(z), its parsing, true mask")
    cols = ["renders", "augmented_renders"] + (["generated"] if g is not None else [])
    rows = [[n] + [res[c]["per_class"][n] for c in cols] for n in CLASS_NAMES]
    rows.append(["**mean (11 classes)**"] + [res[c]["mean_iou"] for c in cols])
    rows.append(["pixel accuracy"] + [res[c]["pixel_accuracy"] for c in cols])
    rows.append(["per-image mean IoU (median)"] + [res[c]["per_image_mean_iou"]["median"] for c in cols])
    write_report(out, "synthface segmenter accuracy", [
        ("IoU against the true masks", markdown_table(["class"] + ["render(truth(z))", "augmented render", "G(z)"][:len(cols)], rows)
         + f"\n\n{args.n} held-out z (seed {args.seed}), 224x224 maps through the stage-3 path; segmenter "
           f"`{args.segmenter}`" + (f", generator `{profile['generator_checkpoint']}`" if g is not None else "")),
        ("Examples", f"![examples](report/{sheet.name})"),
    ])
    for c in cols:
        r = res[c]
        print(f"{c:>17}: mean IoU {r['mean_iou']:.4f} | " + ", ".join(f"{k} {v:.3f}" for k, v in r["per_class"].items()))


if __name__ == "__main__":
    main()
