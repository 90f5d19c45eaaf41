"""Stage 3: face-parse the filtered images.

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
``face_detect_failures.json``. Outputs of images no longer in the input folder are removed.
``metrics.json`` and ``report.md`` summarise every image in the folder (not only this run's).
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pipeline.io import (atomic_write_json, atomic_write_png, read_png_rgb, remove_stale_tmp, remove_unlisted,
                         sha256_file)
from pipeline.reports import markdown_table, save_figure, write_metrics, write_report
from pipeline.runtime import Timer, check_run_manifest, peak_rss_mb

from .synth_segmenter import (CROP_SIZE, NUM_CLASSES, confusion_matrix, iou_scores, load_segmenter, normalise,
                              per_image_mean_iou, resize_mask_nearest, whole_frame_crops)

RESULTS_DIR = "segmentation_results"
FAILURES_FILE = "face_detect_failures.json"
INPUT_RECORD = "input_sha256.json"        # img_no -> SHA-256 of the input file the outputs were made from
INPUT_RE = re.compile(r"^(\d+)\.png$")
OUTPUT_RE = re.compile(r"^(parsing_visualization|parsing|face|true_mask)_(\d{6})\.png$")
ON_NO_FACE = ("whole_frame", "skip")
BACKENDS = ("synthface", "facexformer")
FACEXFORMER_HINT = (
    "Get the official FaceXFormer checkpoint (file ckpts/model.pt of the FaceXFormer authors' model hub, "
    "about 368 MB, weights under the key 'state_dict_backbone') and save it as {path}. "
    "Nothing is downloaded at run time.")


class Stage3InputError(ValueError):
    """A stage-3 input (image folder, image, latents row) is missing or malformed; the message names it."""


@dataclass
class Stage3Settings:
    batch_size: int | None = None      # None: the profile's segmentation.batch_size
    on_no_face: str | None = None      # None: the profile's segmentation.on_no_face
    max_images: int | None = None      # only the first N inputs (sorted by number); None: all

    def resolve(self, profile) -> "Stage3Settings":
        block = profile.get("segmentation", {})
        s = Stage3Settings(batch_size=int(self.batch_size or block.get("batch_size", 16)),
                           on_no_face=self.on_no_face or block.get("on_no_face", "whole_frame"),
                           max_images=self.max_images)
        if s.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {s.batch_size}")
        if s.on_no_face not in ON_NO_FACE:
            raise ValueError(f"on_no_face must be one of {', '.join(ON_NO_FACE)}, got {s.on_no_face!r}")
        if s.max_images is not None and s.max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {s.max_images}")
        return s


# ------------------------------------------------------------------------------------ backends

class CropResult(NamedTuple):
    tensor: torch.Tensor | None       # normalised [3, 224, 224] (None: skipped, no face)
    box: tuple | None                 # (x1, y1, x2, y2) int pixels of the source image the crop covers
    crop: np.ndarray | None           # uint8 [224, 224, 3]: the crop the parser sees
    detected: bool                    # False: no face found (fallback or skip)


class WholeFrameBackend:
    """synthface: the whole aligned frame, resized to 224 (bicubic), parsed by the default segmenter."""

    name = "synthface"
    has_detector = False

    def __init__(self, model, info: dict | None = None, size: int = CROP_SIZE):
        self.model = model.eval()
        self.size = size
        self._info = info or {}

    def info(self) -> dict:
        return {"backend": self.name, "crop": f"whole frame -> {self.size} bicubic", **self._info}

    def crop(self, images: Sequence[np.ndarray]) -> list[CropResult]:
        return whole_frame_results(images, self.size, detected=True)

    @torch.inference_mode()
    def parse(self, x: torch.Tensor) -> np.ndarray:
        return self.model(x).argmax(1).to(torch.uint8).numpy()


def whole_frame_results(images: Sequence[np.ndarray], size: int, detected: bool) -> list[CropResult]:
    crops = whole_frame_crops(images, size)
    x = normalise(crops)
    return [CropResult(x[i], (0, 0, int(im.shape[1]), int(im.shape[0])), crops[i], detected)
            for i, im in enumerate(images)]


class DetectorBackend:
    """A face detector-cropper + a parser (celeba256: MTCNN + FaceXFormer).

    ``cropper.crop(list of uint8 RGB images)`` returns, per image, ``(tensor [3, 224, 224] or None,
    box or None, crop uint8 [224, 224, 3] or None)``; ``None`` means no face. ``on_no_face``:
    ``whole_frame`` parses the whole image resized to 224 instead (flagged), ``skip`` leaves it out.
    ``logits_to_map(logits [B, 11, 224, 224]) -> uint8 [B, 224, 224]``.
    """

    has_detector = True

    def __init__(self, cropper, model, logits_to_map, on_no_face: str = "whole_frame", name: str = "facexformer",
                 info: dict | None = None, size: int = CROP_SIZE):
        if on_no_face not in ON_NO_FACE:
            raise ValueError(f"on_no_face must be one of {', '.join(ON_NO_FACE)}, got {on_no_face!r}")
        self.cropper, self.model, self.logits_to_map = cropper, model, logits_to_map
        self.on_no_face, self.name, self.size = on_no_face, name, size
        self._info = info or {}

    def info(self) -> dict:
        return {"backend": self.name, "crop": "face detector, largest box + 25 % margin -> 224 bicubic",
                "on_no_face": self.on_no_face, **self._info}

    def crop(self, images: Sequence[np.ndarray]) -> list[CropResult]:
        found = self.cropper.crop(list(images))
        if len(found) != len(images):
            raise RuntimeError(f"face cropper returned {len(found)} results for {len(images)} images")
        out = []
        for im, (x, box, crop) in zip(images, found):
            if x is not None:
                box = tuple(int(v) for v in box) if box is not None else (0, 0, int(im.shape[1]), int(im.shape[0]))
                out.append(CropResult(torch.as_tensor(x, dtype=torch.float32), box, np.asarray(crop, np.uint8), True))
            elif self.on_no_face == "whole_frame":
                out.append(whole_frame_results([im], self.size, detected=False)[0])
            else:
                out.append(CropResult(None, None, None, False))
        return out

    @torch.inference_mode()
    def parse(self, x: torch.Tensor) -> np.ndarray:
        return np.asarray(self.logits_to_map(self.model(x)), dtype=np.uint8)


def build_backend(profile, on_no_face: str):
    """The profile's parsing backend (``segmentation.backend``); weights are loaded strictly."""
    block = profile.get("segmentation")
    if not block:
        raise ValueError(f"profile {profile.name!r} has no 'segmentation' block (backend, checkpoint, batch_size, ...)")
    backend = block.get("backend")
    if backend == "synthface":
        path = profile.path(block["checkpoint"])
        model = load_segmenter(path)
        return WholeFrameBackend(model, {"checkpoint": block["checkpoint"], "checkpoint_sha256": sha256_file(path)})
    if backend == "facexformer":
        rel = block.get("facexformer_checkpoint")
        path = profile.path(rel) if rel else None
        if path is None or not path.is_file():
            raise FileNotFoundError(f"FaceXFormer checkpoint not found: {path}\n"
                                    + block.get("checkpoint_hint", FACEXFORMER_HINT.format(path=rel)))
        from .face_crop import FaceCropper          # lazy: facenet-pytorch / Swin-B only for this profile
        from .facexformer import load_facexformer, parse_logits_to_map
        model = load_facexformer(path, trust_checkpoint=bool(block.get("trust_checkpoint", False)),
                                 **({"hint": block["checkpoint_hint"]} if block.get("checkpoint_hint") else {}))
        cropper = FaceCropper(on_no_face="skip", detect_batch_size=int(block.get("detect_batch_size", 8)))
        return DetectorBackend(cropper, model, parse_logits_to_map, on_no_face,
                               info={"checkpoint": rel, "checkpoint_sha256": sha256_file(path),
                                     "detector": "facenet-pytorch MTCNN (keep_all, select_largest)"})
    raise ValueError(f"profile {profile.name!r}: unknown segmentation backend {backend!r}; "
                     f"expected one of {', '.join(BACKENDS)}")


# ------------------------------------------------------------------------------------ inputs

def discover_inputs(input_dir: Path) -> dict[int, Path]:
    """``{n: path}`` of ``NNNNNN.png`` files in ``input_dir``, sorted by n."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise Stage3InputError(f"input folder {input_dir} not found; run stage 2 (run_cnn.py) first, "
                               f"it writes the filtered images there")
    found = {}
    for p in input_dir.iterdir():
        m = INPUT_RE.match(p.name)
        if m:
            n = int(m.group(1))
            if n in found:
                raise Stage3InputError(f"{p} and {found[n]} have the same image number {n}")
            found[n] = p
    if not found:
        raise Stage3InputError(f"input folder {input_dir} holds no NNNNNN.png images")
    return dict(sorted(found.items()))


def read_input_image(path: Path, resolution: int, with_hash: bool = False):
    """The uint8 RGB image (and, with ``with_hash``, the SHA-256 of the file's bytes)."""
    try:
        data = Path(path).read_bytes()
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except OSError as exc:
        raise Stage3InputError(f"input image {path} cannot be read (missing or unreadable: {exc})") from exc
    if img is None:
        raise Stage3InputError(f"input image {path} cannot be decoded (corrupt or not an image)")
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape != (resolution, resolution, 3):
        raise Stage3InputError(f"input image {path} has shape {img.shape} ({img.dtype}); expected "
                               f"({resolution}, {resolution}, 3) uint8 RGB for this profile")
    return (img, hashlib.sha256(data).hexdigest()) if with_hash else img


def read_latents(path: Path, img_nos: Sequence[int], z_dim: int) -> np.ndarray:
    """z [len(img_nos), z_dim] float32 from ``latents.csv`` (rows looked up by ``img_no``)."""
    path = Path(path)
    if not path.is_file():
        raise Stage3InputError(f"latents file {path} not found; it is written by stage 1 "
                               f"(run_original_generator.py) and gives the true masks")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise Stage3InputError(f"latents file {path} cannot be parsed ({exc})") from exc
    zcols = [f"z_{i}" for i in range(z_dim)]
    missing = [c for c in ["img_no"] + zcols if c not in df.columns]
    if missing:
        raise Stage3InputError(f"latents file {path} lacks column(s) {', '.join(missing[:5])}"
                               f"{' …' if len(missing) > 5 else ''} (expected img_no, img_name, z_0 … z_{z_dim - 1})")
    nos = pd.to_numeric(df["img_no"], errors="coerce")
    bad = np.flatnonzero(nos.isna().to_numpy() | (nos.fillna(0) % 1 != 0).to_numpy())
    if len(bad):
        raise Stage3InputError(f"latents file {path}, row {bad[0] + 2} (line), column img_no: "
                               f"{df['img_no'].iloc[bad[0]]!r} is not an integer")
    df = df.assign(img_no=nos.astype(np.int64))
    dup = df["img_no"][df["img_no"].duplicated()]
    if len(dup):
        raise Stage3InputError(f"latents file {path}: img_no {int(dup.iloc[0])} appears more than once")
    pos = pd.Series(np.arange(len(df)), index=df["img_no"].to_numpy())
    absent = [n for n in img_nos if n not in pos.index]
    if absent:
        raise Stage3InputError(f"latents file {path} has no row for image {absent[0]} "
                               f"({len(absent)} input image(s) without a latent)")
    rows = pos.loc[list(img_nos)].to_numpy()
    block = df.iloc[rows][zcols].apply(pd.to_numeric, errors="coerce")
    bad = np.argwhere(~np.isfinite(block.to_numpy(np.float64)))
    if len(bad):
        r, c = bad[0]
        raise Stage3InputError(f"latents file {path}, line {rows[r] + 2} (img_no {img_nos[r]}), column {zcols[c]}: "
                               f"{df.iloc[rows[r]][zcols[c]]!r} is not a finite number")
    return block.to_numpy(np.float32)


# ------------------------------------------------------------------------------------ outputs

def output_names(n: int, with_truth: bool) -> list[str]:
    names = [f"face_{n:06d}.png", f"parsing_visualization_{n:06d}.png", f"parsing_{n:06d}.png"]
    return ([f"true_mask_{n:06d}.png"] + names) if with_truth else names


def overlay(crop: np.ndarray, class_map: np.ndarray) -> np.ndarray:
    """50/50 blend of the crop and the class map in the FaceXFormer palette (uint8 RGB)."""
    from synthface.renderer import PALETTE
    return cv2.addWeighted(np.ascontiguousarray(crop), 0.5, PALETTE[np.clip(class_map, 0, 10)], 0.5, 0.0)


def crop_true_mask(mask: np.ndarray, box: tuple, size: int = CROP_SIZE) -> np.ndarray:
    """The true mask in the crop's coordinates: cut by ``box`` (zero outside the image), nearest to size."""
    x1, y1, x2, y2 = (int(v) for v in box)
    h, w = mask.shape
    canvas = np.zeros((max(1, y2 - y1), max(1, x2 - x1)), np.uint8)
    sx1, sy1, sx2, sy2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if sx2 > sx1 and sy2 > sy1:
        canvas[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = mask[sy1:sy2, sx1:sx2]
    return resize_mask_nearest(canvas, size)


def labelled_grid(tiles: Sequence[np.ndarray], labels: Sequence[str], ncols: int = 6, scale: float = 0.5) -> np.ndarray:
    """uint8 RGB tiles (same size) with a caption strip each, in one image (no matplotlib: fast)."""
    from synthface.renderer import contact_sheet
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


def _read_map(path: Path) -> np.ndarray:
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None or m.ndim != 2:
        raise OSError(f"cannot read class map {path} (missing, corrupt or not single-channel)")
    return m


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

def run_stage3(profile, settings: Stage3Settings | None = None, input_dir: Path | None = None,
               latents_path: Path | None = None, out_dir: Path | None = None, backend=None,
               show_progress: bool = True) -> dict:
    """Parse every input image (see the module docstring); ``backend`` overrides the profile's (tests)."""
    t_start = time.perf_counter()
    s = (settings or Stage3Settings()).resolve(profile)
    res = int(profile["resolution"])
    input_dir = Path(input_dir) if input_dir else profile.stage_dir("stage2") / "filtered"
    latents_path = Path(latents_path) if latents_path else profile.stage_dir("stage1") / "latents.csv"
    out_dir = Path(out_dir) if out_dir else profile.stage_dir("stage3")
    res_dir = out_dir / RESULTS_DIR
    with_truth = "world_seed" in profile
    timings = {}

    # 1. validate every input before writing anything
    with Timer() as t:
        inputs = discover_inputs(input_dir)
        if s.max_images:
            inputs = dict(list(inputs.items())[:s.max_images])
        nos = list(inputs)
        hashes = {}
        for n in tqdm(nos, desc="stage 3: checking inputs", unit="img", disable=not show_progress, leave=False):
            hashes[n] = read_input_image(inputs[n], res, with_hash=True)[1]
        z = read_latents(latents_path, nos, int(profile["generator"]["z_dim"])) if with_truth else None
    timings["validate_inputs_s"] = round(t.seconds, 3)
    z_of = {n: z[i] for i, n in enumerate(nos)} if with_truth else {}

    if backend is None:
        backend = build_backend(profile, s.on_no_face)
    elif getattr(backend, "has_detector", False) and getattr(backend, "on_no_face", s.on_no_face) != s.on_no_face:
        raise ValueError(f"backend on_no_face {backend.on_no_face!r} differs from the settings' {s.on_no_face!r}")
    world = None
    if with_truth:
        from synthface.world import WorldMap
        world = WorldMap(z_dim=int(profile["generator"]["z_dim"]), seed=int(profile["world_seed"]))
    res_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(res_dir)
    remove_stale_tmp(out_dir)
    check_run_manifest(out_dir / "run_config.json", {
        "profile": profile.name, "resolution": res, "crop_size": CROP_SIZE, **backend.info(),
        "on_no_face": s.on_no_face if backend.has_detector else None,
        "true_masks": with_truth, "world_seed": profile.get("world_seed")})

    # 2. drop outputs of images that are no longer inputs
    keep = set(nos)
    removed = remove_unlisted(res_dir, OUTPUT_RE, keep, group=2)
    fail_path, record_path = out_dir / FAILURES_FILE, out_dir / INPUT_RECORD
    failures = {n: v for n, v in _load_record(fail_path).items() if n in keep}
    record = {n: v for n, v in _load_record(record_path).items() if n in keep}

    # 3. parse, chunk by chunk; an image is finished when its files exist and were made from the
    #    same input bytes (record of SHA-256s, saved after each chunk)
    def done(n: int) -> bool:
        if record.get(n) != hashes[n]:
            return False
        return failures.get(n) == "skip" or all((res_dir / f).is_file() for f in output_names(n, with_truth))

    chunks = [nos[i:i + s.batch_size] for i in range(0, len(nos), s.batch_size)]
    written = existing = skipped_now = 0
    tm = {"read_s": 0.0, "crop_s": 0.0, "parse_s": 0.0, "truth_s": 0.0, "write_s": 0.0}
    for chunk in tqdm(chunks, desc=f"stage 3 [{profile.name}] parsing", unit="batch", disable=not show_progress):
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
            from synthface.renderer import render_batch
            want = [n for n in todo if n in map_of]
            if want:
                _, masks = render_batch(world.truth(np.stack([z_of[n] for n in want])), resolution=res)
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
        "stage": "3_segmentation", "profile": profile.name, "resolution": res, "crop_size": CROP_SIZE,
        "backend": backend.info(), "on_no_face": s.on_no_face if backend.has_detector else None,
        "batch_size": s.batch_size, "threads": torch.get_num_threads(),
        "seeds": {"world_seed": profile.get("world_seed"), "note": "stage 3 makes no random choice"},
        "counts": {"inputs": len(nos), "parsed": summary["parsed"], "written_this_run": written,
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
    write_metrics(out_dir, metrics)
    _write_report(out_dir, profile, metrics, summary, with_truth)
    return metrics


def summarise(res_dir: Path, nos: Sequence[int], failures: dict, with_truth: bool) -> dict:
    """Pixel shares (and IoU against the true masks) over every parsed image of the folder."""
    from pipeline.vocabulary import CLASS_NAMES
    parsed = [n for n in nos if failures.get(n) != "skip" and (res_dir / f"parsing_{n:06d}.png").is_file()]
    counts = np.zeros(NUM_CLASSES, np.int64)
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    true_counts = np.zeros(NUM_CLASSES, np.int64)
    per_image = np.zeros(len(parsed), np.float32)
    for k in range(0, len(parsed), 256):
        part = parsed[k:k + 256]
        maps = np.stack([_read_map(res_dir / f"parsing_{n:06d}.png") for n in part])
        counts += np.bincount(maps.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
        if with_truth:
            true = np.stack([_read_map(res_dir / f"true_mask_{n:06d}.png") for n in part])
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


def _write_report(out_dir: Path, profile, m: dict, summary: dict, with_truth: bool) -> None:
    import matplotlib.pyplot as plt

    from pipeline.vocabulary import CLASS_NAMES, PALETTE
    res_dir = out_dir / RESULTS_DIR
    rep = out_dir / "report"
    sections = []
    c = m["counts"]
    sections.append(("Summary", markdown_table(["item", "value"], [
        ["profile", profile.name], ["backend", m["backend"]["backend"]], ["crop", m["backend"]["crop"]],
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
                tiles.append(PALETTE[_read_map(res_dir / f"true_mask_{n:06d}.png")])
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
    write_report(out_dir, f"Stage 3 — face parsing ({profile.name})", sections)
