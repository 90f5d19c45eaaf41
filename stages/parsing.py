"""Parsing (stage 3, run_segmentation.py): face-parse the filtered images.

Inputs: ``<data root>/stage2/filtered/NNNNNN.png`` (the image number is the integer file stem;
other files are ignored), of the profile's resolution. Profiles with a ``world_seed`` (synthface)
also need ``<data root>/stage1/latents.csv`` (``img_no, img_name, z_0 …``) for the true masks.
Every input is checked before anything is written: a missing input folder, an unreadable or
wrongly sized image, a latent row that is missing or not numeric is an error naming the file
(and row / column); nothing is written for it.

Backends (the ``segmentation`` block of the profile, key ``backend``):

* ``synthface``: the default parser ``segmentation.synth_segmenter`` (weights ``checkpoint``);
  the crop is the whole aligned frame resized to 224x224 (bicubic); there is no face detector.
* ``facexformer``: MTCNN face crop (``segmentation.face_crop.FaceCropper``: largest box, 25 %
  margin per side, 224x224 bicubic) + FaceXFormer (``segmentation.facexformer``; weights
  ``facexformer_checkpoint``). When no face is found, ``on_no_face`` decides: ``whole_frame``
  (the whole image resized to 224, flagged in ``metrics.json``) or ``skip`` (no files for it).

Outputs (``<data root>/stage3/segmentation_results/``), per image n:

* ``parsing_{n:06d}.png``: the class map, single-channel uint8 PNG, 224x224, ids 0..10;
* ``face_{n:06d}.png``: the 224x224 RGB crop the parser saw;
* ``parsing_visualization_{n:06d}.png``: 50/50 blend of the crop and the map in the FaceXFormer palette;
* ``true_mask_{n:06d}.png`` (world-backed profiles): the renderer's exact mask of render(truth(z_n)),
  cropped by the same box and resized (nearest neighbour) to 224x224.

Work runs in fixed chunks of ``batch_size`` consecutive inputs (sorted by image number). An image
is finished when its files exist and ``input_sha256.json`` (saved after each chunk) holds the hash
of the input file they were made from; a chunk of finished images is skipped, any other chunk is
recomputed as a whole (same batch, same numbers) and its unfinished images are written, so a
resumed run ends with the same bytes as an uninterrupted one, and an input that changed under the
same name (a new stage 1 / stage 2 run) is parsed again. Images without a face are recorded in
``face_detect_failures.json``. Outputs of images no longer in the input folder are removed;
``max_images`` limits the work only (other images' finished outputs stay). An output that is not a
complete PNG (its chunks' CRCs, an IEND chunk) is made again. The stage-2 (and stage-1) folders must
be complete and unchanged since they finished (:mod:`pipeline.lineage`).
``metrics.json`` and ``report.md`` summarise every image in the folder (not only this run's).
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from tqdm import tqdm

from pipeline import lineage
from pipeline.config import ConfigError, resolve
from pipeline.io import (InputError, atomic_write_json, atomic_write_png, png_intact, remove_stale_tmp, remove_unlisted,
                         sha256_file)
from pipeline.latents import read_latents
from pipeline.profiles import load_profile
from pipeline.runtime import Timer, apply_threads, check_run_manifest, peak_rss_mb
from segmentation.backends import ON_NO_FACE, DetectorBackend, WholeFrameBackend, crop_true_mask, overlay
from segmentation.synth_segmenter import CROP_SIZE, NUM_CLASSES, load_segmenter
from synthface.renderer import render_batch
from synthface.truth import truth_of

from .parsing_report import FAILURES_FILE, RESULTS_DIR, output_names, summarise, write_stage_report

INPUT_RECORD = "input_sha256.json"        # img_no -> SHA-256 of the input file the outputs were made from
INPUT_RE = re.compile(r"^(\d+)\.png$")
OUTPUT_RE = re.compile(r"^(parsing_visualization|parsing|face|true_mask)_(\d{6})\.png$")
BACKENDS = ("synthface", "facexformer")
# keys of the profile's "segmentation" block that describe the parser (shared with the parsing judge)
PARSER_KEYS = ("backend", "checkpoint", "facexformer_checkpoint", "checkpoint_hint", "trust_checkpoint",
               "detect_batch_size")
FACEXFORMER_HINT = (
    "Get the official FaceXFormer checkpoint (file ckpts/model.pt of the FaceXFormer authors' model hub, "
    "about 368 MB, weights under the key 'state_dict_backbone') and save it as {path}. "
    "Nothing is downloaded at run time.")


class ParsingInputError(InputError):
    """A stage-3 input (image folder, image) is missing or malformed; the message names it."""


@dataclass
class ParsingSettings:
    batch_size: int = 16
    on_no_face: str = "whole_frame"    # or "skip": images without a detected face are left out
    max_images: int = 0                # only the first N inputs (sorted by number); 0: all

    def validate(self) -> "ParsingSettings":
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.on_no_face not in ON_NO_FACE:
            raise ConfigError(f"on_no_face must be one of {', '.join(ON_NO_FACE)}, got {self.on_no_face!r}")
        if self.max_images < 0:
            raise ConfigError(f"max_images must be >= 0, got {self.max_images}")
        return self


@dataclass
class ParsingRun:
    """What the stage needs of the profile, as plain values (read once at the top)."""
    profile_name: str
    resolution: int
    z_dim: int
    world_seed: int | None             # None: no world, no true masks


def settings_of(values: dict) -> ParsingSettings:
    return ParsingSettings(int(values["batch_size"]), str(values["on_no_face"]), int(values["max_images"])).validate()


def main(consts: dict, profile_name: str, flags, input_dir: str | None = None, latents: str | None = None,
         out: str | None = None, show_progress: bool = True) -> dict:
    """The script's entry: constants, then the profile's ``segmentation`` preset, then flags; then plain values."""
    profile = load_profile(profile_name)
    cfg = resolve(consts, profile, "segmentation", flags, ignore=PARSER_KEYS)
    apply_threads(int(cfg["threads"]))
    s = settings_of(cfg.values)
    run = ParsingRun(profile.name, int(profile["resolution"]), int(profile["generator"]["z_dim"]),
                     int(profile["world_seed"]) if "world_seed" in profile else None)
    block = profile.get("segmentation")
    if not block:
        raise ConfigError(f"profile {profile.name!r} has no 'segmentation' block (backend, checkpoint, ...)")
    m = run_parsing(run, s, input_dir=Path(input_dir) if input_dir else profile.stage_dir("stage2") / "filtered",
                    latents_path=Path(latents) if latents else profile.stage_dir("stage1") / "latents.csv",
                    out_dir=Path(out) if out else profile.stage_dir("stage3"),
                    backend=build_backend(block, s.on_no_face, profile.path), show_progress=show_progress,
                    sources={k: v for k, v in cfg.sources.items() if v != "constant"})
    c = m["counts"]
    print(f"stage 3: {c['inputs']} images, {c['written_this_run']} parsed this run, {c['already_complete']} already "
          f"done, {m['face_detect_failures']['count']} face-detect failures, {m['images_per_s']} images/s")
    if m.get("truth"):
        t = m["truth"]
        print(f"against the true masks: mean IoU {t['mean_iou']:.4f} over {t['images']} images; "
              + ", ".join(f"{k} {v:.3f}" for k, v in t["per_class"].items() if v is not None))
    return m


def build_backend(block: dict, on_no_face: str, path_of: Callable[[str], Path]):
    """The parsing backend a profile's ``segmentation`` block describes; weights are loaded strictly.

    ``path_of`` turns the block's (repository-relative) paths into paths."""
    backend = block.get("backend")
    if backend == "synthface":
        path = path_of(block["checkpoint"])
        model = load_segmenter(path)
        return WholeFrameBackend(model, {"checkpoint": block["checkpoint"], "checkpoint_sha256": sha256_file(path)})
    if backend == "facexformer":
        rel = block.get("facexformer_checkpoint")
        path = path_of(rel) if rel else None
        if path is None or not path.is_file():
            raise FileNotFoundError(f"FaceXFormer checkpoint not found: {path}\n"
                                    + block.get("checkpoint_hint", FACEXFORMER_HINT.format(path=rel)))
        # lazy: facenet-pytorch and torchvision's Swin-B are optional dependencies, needed only for this backend
        from legacy import load_facexformer
        from segmentation.face_crop import FaceCropper
        from segmentation.facexformer import parse_logits_to_map
        model = load_facexformer(path, trust_checkpoint=bool(block.get("trust_checkpoint", False)),
                                 **({"hint": block["checkpoint_hint"]} if block.get("checkpoint_hint") else {}))
        cropper = FaceCropper(on_no_face="skip", detect_batch_size=int(block.get("detect_batch_size", 8)))
        return DetectorBackend(cropper, model, parse_logits_to_map, on_no_face,
                               info={"checkpoint": rel, "checkpoint_sha256": sha256_file(path),
                                     "detector": "facenet-pytorch MTCNN (keep_all, select_largest)"})
    raise ConfigError(f"segmentation block: unknown backend {backend!r}; "
                     f"expected one of {', '.join(BACKENDS)}")



# ------------------------------------------------------------------------------------ inputs

def discover_inputs(input_dir: Path) -> dict[int, Path]:
    """``{n: path}`` of ``NNNNNN.png`` files in ``input_dir``, sorted by n."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise ParsingInputError(f"input folder {input_dir} not found; run stage 2 (run_cnn.py) first, "
                               f"it writes the filtered images there")
    found = {}
    for p in input_dir.iterdir():
        m = INPUT_RE.match(p.name)
        if m:
            n = int(m.group(1))
            if n in found:
                raise ParsingInputError(f"{p} and {found[n]} have the same image number {n}")
            found[n] = p
    if not found:
        raise ParsingInputError(f"input folder {input_dir} holds no NNNNNN.png images")
    return dict(sorted(found.items()))


def read_input_image(path: Path, resolution: int, with_hash: bool = False):
    """The uint8 RGB image (and, with ``with_hash``, the SHA-256 of the file's bytes)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ParsingInputError(f"input image {path} cannot be read (missing or unreadable: {exc})") from exc
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    except cv2.error:                       # OpenCV asserts on some malformed buffers
        img = None
    if img is None:
        raise ParsingInputError(f"input image {path} cannot be decoded (corrupt or not an image)")
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape != (resolution, resolution, 3):
        raise ParsingInputError(f"input image {path} has shape {img.shape} ({img.dtype}); expected "
                               f"({resolution}, {resolution}, 3) uint8 RGB for this profile")
    return (img, hashlib.sha256(data).hexdigest()) if with_hash else img


def _load_record(path: Path) -> dict:
    """``{img_no: value}`` from a JSON record; a missing or damaged record is empty (work is redone)."""
    if not path.is_file():
        return {}
    try:
        return {int(k): v for k, v in json.loads(path.read_text()).items()}
    except (json.JSONDecodeError, ValueError, AttributeError):
        return {}


def _save_record(path: Path, rec: dict) -> None:
    atomic_write_json(path, {f"{k:06d}": v for k, v in sorted(rec.items())})



# ------------------------------------------------------------------------------------ the stage

def run_parsing(run: ParsingRun, s: ParsingSettings, input_dir: Path, latents_path: Path, out_dir: Path, backend,
                show_progress: bool = True, sources: dict | None = None) -> dict:
    """Parse every input image (see the module docstring) with ``backend`` (see ``build_backend``)."""
    t_start = time.perf_counter()
    s.validate()
    res = int(run.resolution)
    input_dir, latents_path, out_dir = Path(input_dir), Path(latents_path), Path(out_dir)
    res_dir = out_dir / RESULTS_DIR
    with_truth = run.world_seed is not None
    timings = {}

    # 1. validate every input before writing anything
    with Timer() as t:
        all_inputs = discover_inputs(input_dir)
        inputs = dict(list(all_inputs.items())[:s.max_images]) if s.max_images else all_inputs
        nos = list(inputs)
        hashes = {}
        for n in tqdm(nos, desc="stage 3: checking inputs", unit="img", disable=not show_progress, leave=False):
            hashes[n] = read_input_image(inputs[n], res, with_hash=True)[1]
        z = read_latents(latents_path, nos, run.z_dim)[1] if with_truth else None
    timings["validate_inputs_s"] = round(t.seconds, 3)
    z_of = {n: z[i] for i, n in enumerate(nos)} if with_truth else {}

    if getattr(backend, "has_detector", False) and getattr(backend, "on_no_face", s.on_no_face) != s.on_no_face:
        raise ConfigError(f"backend on_no_face {backend.on_no_face!r} differs from the settings' {s.on_no_face!r}")
    # stage 2 (and stage 1 for the true masks) complete and unchanged; work here is keyed by the input
    # files' hashes, so a new stage 2 is parsed again where it changed rather than refused
    ups = {"stage2": (input_dir.parent, "run_cnn.py (stage 2)")}
    if with_truth:
        ups["stage1"] = (latents_path.parent, "run_original_generator.py (stage 1)")
    consumed = lineage.check_upstreams(ups)
    check_run_manifest(out_dir / "run_config.json", {
        "profile": run.profile_name, "resolution": res, "crop_size": CROP_SIZE, **backend.info(),
        "on_no_face": s.on_no_face if backend.has_detector else None,
        "true_masks": with_truth, "world_seed": run.world_seed}, sources=sources or {})
    lineage.begin(out_dir, consumed, check=False)
    res_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(res_dir)
    remove_stale_tmp(out_dir)

    # 2. drop outputs of images that are no longer inputs (``max_images`` limits the work, never
    #    what is kept: outputs of the other images in the input folder stay)
    keep = set(all_inputs)
    removed = remove_unlisted(res_dir, OUTPUT_RE, keep, group=2)
    fail_path, record_path = out_dir / FAILURES_FILE, out_dir / INPUT_RECORD
    failures = {n: v for n, v in _load_record(fail_path).items() if n in keep}
    record = {n: v for n, v in _load_record(record_path).items() if n in keep}

    # 3. parse, chunk by chunk; an image is finished when its files exist and were made from the
    #    same input bytes (record of SHA-256s, saved after each chunk)
    def done(n: int) -> bool:
        if record.get(n) != hashes[n]:
            return False
        return failures.get(n) == "skip" or all(png_intact(res_dir / f) for f in output_names(n, with_truth))

    chunks = [nos[i:i + s.batch_size] for i in range(0, len(nos), s.batch_size)]
    written = existing = skipped_now = 0
    tm = {"read_s": 0.0, "crop_s": 0.0, "parse_s": 0.0, "truth_s": 0.0, "write_s": 0.0}
    for chunk in tqdm(chunks, desc=f"stage 3 [{run.profile_name}] parsing", unit="batch", disable=not show_progress):
        todo = [n for n in chunk if not done(n)]
        existing += len(chunk) - len(todo)
        if not todo:
            continue
        t0 = time.perf_counter()
        images = [read_input_image(inputs[n], res) for n in chunk]
        t1 = time.perf_counter()
        crops = backend.crop(images)
        t2 = time.perf_counter()
        idx = [i for i, c in enumerate(crops) if c.tensor is not None]
        maps = backend.parse(torch.stack([crops[i].tensor for i in idx])) if idx else np.zeros((0,), np.uint8)
        t3 = time.perf_counter()
        map_of = {chunk[i]: maps[j] for j, i in enumerate(idx)}
        true_of = {}
        if with_truth:
            want = [n for n in todo if n in map_of]
            if want:
                _, masks = render_batch(truth_of(np.stack([z_of[n] for n in want]), run.world_seed), resolution=res)
                box_of = {chunk[i]: crops[i].box for i in idx}
                true_of = {n: crop_true_mask(masks[k], box_of[n]) for k, n in enumerate(want)}
        t4 = time.perf_counter()
        for i, n in enumerate(chunk):
            if n not in todo:
                continue
            c = crops[i]
            if c.detected:
                failures.pop(n, None)
            else:
                failures[n] = s.on_no_face if backend.has_detector else "whole_frame"
            if c.tensor is None:
                for f in output_names(n, with_truth):          # left from an earlier version of the image
                    (res_dir / f).unlink(missing_ok=True)
                skipped_now += 1
                continue
            m = np.ascontiguousarray(map_of[n], dtype=np.uint8)
            if m.shape != (CROP_SIZE, CROP_SIZE) or int(m.max(initial=0)) >= NUM_CLASSES:
                raise RuntimeError(f"parser returned a map of shape {m.shape}, max {m.max()} for image {n}")
            if with_truth:
                atomic_write_png(res_dir / f"true_mask_{n:06d}.png", true_of[n])
            atomic_write_png(res_dir / f"face_{n:06d}.png", c.crop)
            atomic_write_png(res_dir / f"parsing_visualization_{n:06d}.png", overlay(c.crop, m))
            atomic_write_png(res_dir / f"parsing_{n:06d}.png", m)
            written += 1
        record.update({n: hashes[n] for n in todo})
        _save_record(fail_path, failures)
        _save_record(record_path, record)
        t5 = time.perf_counter()
        for k, a, b in (("read_s", t0, t1), ("crop_s", t1, t2), ("parse_s", t2, t3), ("truth_s", t3, t4),
                        ("write_s", t4, t5)):
            tm[k] += b - a
    if not fail_path.is_file() or failures != _load_record(fail_path):
        _save_record(fail_path, failures)
    if record != _load_record(record_path):
        _save_record(record_path, record)
    timings.update({k: round(v, 3) for k, v in tm.items()})
    work = tm["read_s"] + tm["crop_s"] + tm["parse_s"]

    # 4. summary over every image in the folder
    with Timer() as t:
        summary = summarise(res_dir, nos, failures, with_truth)
    timings["summary_s"] = round(t.seconds, 3)
    timings["total_s"] = round(time.perf_counter() - t_start, 3)
    metrics = {
        "stage": "3_segmentation", "profile": run.profile_name, "resolution": res, "crop_size": CROP_SIZE,
        "backend": backend.info(), "on_no_face": s.on_no_face if backend.has_detector else None,
        "batch_size": s.batch_size, "threads": torch.get_num_threads(),
        "seeds": {"world_seed": run.world_seed, "note": "stage 3 makes no random choice"},
        "counts": {"inputs": len(nos), "inputs_in_folder": len(all_inputs), "max_images": s.max_images,
                   "parsed": summary["parsed"], "written_this_run": written,
                   "already_complete": existing, "skipped_no_face_this_run": skipped_now,
                   "removed_stale_files": removed},
        "face_detect_failures": {"count": len(failures), "skip": sorted(n for n, a in failures.items() if a == "skip"),
                                 "whole_frame": sorted(n for n, a in failures.items() if a == "whole_frame"),
                                 "detector": backend.has_detector},
        "class_pixel_share": summary["class_pixel_share"],
        "truth": summary.get("truth"),
        "timings": timings,
        "images_per_s": round(written / work, 3) if written and work > 0 else None,
        "parse_ms_per_image": round(1e3 * tm["parse_s"] / written, 3) if written else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "inputs": {"images": str(input_dir), "latents": str(latents_path) if with_truth else None},
        "outputs": {"folder": RESULTS_DIR, "files": output_names(0, with_truth)},
    }
    write_stage_report(out_dir, run.profile_name, metrics, summary, with_truth)
    lineage.close_stage(out_dir, consumed, metrics)          # lineage.json, then metrics.json (last)
    return metrics


