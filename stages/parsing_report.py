"""Parsing (stage 3) summary and report: pixel shares, IoU against the true masks, overlays."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import matplotlib.pyplot as plt
import numpy as np

from pipeline.io import atomic_write_png, read_png_rgb
from pipeline.reports import markdown_table, save_figure, write_report
from pipeline.vocabulary import CLASS_NAMES, PALETTE
from segmentation.synth_segmenter import NUM_CLASSES, confusion_matrix, iou_scores, per_image_mean_iou
from synthface.renderer import contact_sheet

RESULTS_DIR = "segmentation_results"
FAILURES_FILE = "face_detect_failures.json"


def output_names(n: int, with_truth: bool) -> list[str]:
    names = [f"face_{n:06d}.png", f"parsing_visualization_{n:06d}.png", f"parsing_{n:06d}.png"]
    return ([f"true_mask_{n:06d}.png"] + names) if with_truth else names


def read_map(path: Path) -> np.ndarray:
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None or m.ndim != 2:
        raise OSError(f"cannot read class map {path} (missing, corrupt or not single-channel)")
    return m


def labelled_grid(tiles: Sequence[np.ndarray], labels: Sequence[str], ncols: int = 6, scale: float = 0.5) -> np.ndarray:
    """uint8 RGB tiles (same size) with a caption strip each, in one image (no matplotlib: fast)."""
    h, w = tiles[0].shape[:2]
    th, tw = int(round(h * scale)), int(round(w * scale))
    strip = 14
    cells = []
    for tile, label in zip(tiles, labels):
        cell = np.full((th + strip, tw, 3), 255, np.uint8)
        cell[strip:] = cv2.resize(tile, (tw, th), interpolation=cv2.INTER_AREA)
        cv2.putText(cell, label, (2, strip - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1, cv2.LINE_AA)
        cells.append(cell)
    return contact_sheet(np.stack(cells), ncols=ncols, pad=3)


def summarise(res_dir: Path, nos: Sequence[int], failures: dict, with_truth: bool) -> dict:
    """Pixel shares (and IoU against the true masks) over every parsed image of the folder."""
    parsed = [n for n in nos if failures.get(n) != "skip" and (res_dir / f"parsing_{n:06d}.png").is_file()]
    counts = np.zeros(NUM_CLASSES, np.int64)
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    true_counts = np.zeros(NUM_CLASSES, np.int64)
    per_image = np.zeros(len(parsed), np.float32)
    for k in range(0, len(parsed), 256):
        part = parsed[k:k + 256]
        maps = np.stack([read_map(res_dir / f"parsing_{n:06d}.png") for n in part])
        counts += np.bincount(maps.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
        if with_truth:
            true = np.stack([read_map(res_dir / f"true_mask_{n:06d}.png") for n in part])
            true_counts += np.bincount(true.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
            cm += confusion_matrix(maps, true)
            per_image[k:k + len(part)] = per_image_mean_iou(maps, true)
    total = max(int(counts.sum()), 1)
    out = {"parsed": len(parsed), "parsed_nos": parsed,
           "class_pixel_share": {c: float(counts[i] / total) for i, c in enumerate(CLASS_NAMES)}}
    if with_truth and parsed:
        iou = iou_scores(cm, CLASS_NAMES)
        order = np.argsort(per_image, kind="stable")
        out["truth"] = {**iou, "images": len(parsed),
                        "true_pixel_share": {c: float(true_counts[i] / max(int(true_counts.sum()), 1))
                                             for i, c in enumerate(CLASS_NAMES)},
                        "per_image_mean_iou": {"mean": float(per_image.mean()), "median": float(np.median(per_image)),
                                               "min": float(per_image.min()),
                                               "worst": [[int(parsed[i]), float(per_image[i])] for i in order[:8]]},
                        "confusion_matrix_true_by_pred": cm.tolist()}
        out["per_image"] = dict(zip(parsed, per_image.tolist()))
    return out


def write_stage_report(out_dir: Path, profile_name: str, m: dict, summary: dict, with_truth: bool) -> None:
    res_dir = out_dir / RESULTS_DIR
    rep = out_dir / "report"
    sections = []
    c = m["counts"]
    sections.append(("Summary", markdown_table(["item", "value"], [
        ["profile", profile_name], ["backend", m["backend"]["backend"]], ["crop", m["backend"]["crop"]],
        ["parser weights", f"`{m['backend'].get('checkpoint')}`"], ["input images", c["inputs"]],
        ["parsed (in the folder)", summary["parsed"]], ["written this run", c["written_this_run"]],
        ["already complete", c["already_complete"]], ["face-detect failures", m["face_detect_failures"]["count"]],
        ["images/s (this run, read + crop + parse)", m["images_per_s"]], ["threads", m["threads"]],
    ])))
    parsed = summary["parsed_nos"]
    if parsed:
        per = summary.get("per_image", {})
        show = parsed[:12]
        if per:
            worst = [n for n, _ in m["truth"]["per_image_mean_iou"]["worst"][:4] if n not in show]
            show = show[:12 - len(worst)] + worst
        tiles, titles = [], []
        for n in show:
            tiles.append(read_png_rgb(res_dir / f"face_{n:06d}.png"))
            tiles.append(read_png_rgb(res_dir / f"parsing_visualization_{n:06d}.png"))
            titles += [f"{n:06d}", f"IoU {per[n]:.2f}" if n in per else "parsing"]
            if with_truth:
                tiles.append(PALETTE[read_map(res_dir / f"true_mask_{n:06d}.png")])
                titles.append("true mask")
        sheet = rep / "overlays.png"
        atomic_write_png(sheet, labelled_grid(tiles, titles, ncols=6 if with_truth else 8))
        caption = ("Per image: the crop, the parsing overlay" + (", the true mask" if with_truth else "")
                   + (". The last rows are the images with the lowest mean IoU." if per else "."))
        sections.append(("Sample overlays", f"![overlays](report/{sheet.name})\n\n{caption}"))
        fig, ax = plt.subplots(figsize=(9, 3.4))
        xs = np.arange(NUM_CLASSES)
        share = [m["class_pixel_share"][n] for n in CLASS_NAMES]
        colours = PALETTE.astype(float) / 255.0
        if with_truth and m["truth"]:
            ts = [m["truth"]["true_pixel_share"][n] for n in CLASS_NAMES]
            ax.bar(xs - 0.2, share, 0.4, color=colours, edgecolor="k", label="parsing")
            ax.bar(xs + 0.2, ts, 0.4, color="lightgrey", edgecolor="k", label="true mask")
            ax.legend()
        else:
            ax.bar(xs, share, 0.6, color=colours, edgecolor="k")
        ax.set_yscale("log")
        ax.set_xticks(xs, CLASS_NAMES, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("share of pixels")
        ax.set_title(f"per-class pixel share over {summary['parsed']} parsed images")
        bar = save_figure(fig, rep / "class_pixel_share.png")
        rows = [[i, n, m["class_pixel_share"][n]] + ([m["truth"]["true_pixel_share"][n]] if with_truth and m["truth"] else [])
                for i, n in enumerate(CLASS_NAMES)]
        header = ["id", "class", "parsing share"] + (["true share"] if with_truth and m["truth"] else [])
        sections.append(("Per-class pixel shares", f"![pixel shares](report/{bar.name})\n\n" + markdown_table(header, rows)))
    f = m["face_detect_failures"]
    if f["detector"]:
        body = (f"{f['count']} of {c['inputs']} images had no detected face; on_no_face = `{m['on_no_face']}`. "
                f"Parsed on the whole frame: {len(f['whole_frame'])}; skipped (no files): {len(f['skip'])}.")
        listed = (f["whole_frame"] + f["skip"])[:40]
        if listed:
            body += "\n\nImages: " + ", ".join(f"{n:06d}" for n in sorted(listed)) + (" …" if f["count"] > 40 else "")
    else:
        body = "This backend has no face detector: every image is parsed on its whole aligned frame (0 failures)."
    sections.append(("Face-detect failures", body))
    if with_truth and m["truth"]:
        t = m["truth"]
        rows = [[i, n, t["per_class"][n] if t["per_class"][n] is not None else "n/a"] for i, n in enumerate(CLASS_NAMES)]
        rows.append(["", "**mean (11 classes)**", t["mean_iou"]])
        pm = t["per_image_mean_iou"]
        sections.append(("IoU against the true masks", markdown_table(["id", "class", "IoU"], rows)
                         + f"\n\nDataset-level IoU over {t['images']} images (224x224 crops); pixel accuracy "
                           f"{t['pixel_accuracy']:.4f}. Per-image mean IoU: mean {pm['mean']:.4f}, median "
                           f"{pm['median']:.4f}, min {pm['min']:.4f}. The true mask is the renderer's mask of "
                           f"render(truth(z)): on generated images it also counts the generator's own errors."))
    sections.append(("Files", "\n".join(f"- `{RESULTS_DIR}/{n.replace('000000', '{n:06d}')}`"
                                        for n in output_names(0, with_truth))
                     + f"\n- `{FAILURES_FILE}`: images without a detected face and what was done"))
    write_report(out_dir, f"Stage 3 — face parsing ({profile_name})", sections)
