"""Scoring (stage 4) inputs: the image list and the parsing files of every image, checked before use.

Every input file must exist and be a complete PNG (valid signature, every chunk's CRC, an IEND
chunk) of the expected kind and size, and class maps must hold ids 0..10 only. A missing or corrupt
file is a :class:`ScoringInputError` naming it.
"""
from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pipeline.io import InputError
from pipeline.kept_set import list_filtered
from segmentation import property_scores as ps

SEG_SUBDIR = "segmentation_results"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ScoringInputError(InputError):
    """A stage-4 input is missing or corrupt (the message names the file)."""


def check_png(data: bytes, path: Path, kind: str, size: int | None) -> tuple[int, int]:
    """Structural check of a PNG (signature, chunk CRCs, IEND, IHDR kind); returns (width, height)."""
    if len(data) < 8 + 25 + 12 or not data.startswith(PNG_SIGNATURE):
        raise ScoringInputError(f"{kind} file {path} is not a PNG (missing signature or too short)")
    pos, ihdr, end = 8, None, False
    while pos + 12 <= len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        ctype = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if pos + 12 + length > len(data):
            raise ScoringInputError(f"{kind} file {path} is truncated (chunk {ctype!r} at byte {pos} runs past the end)")
        crc = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        if zlib.crc32(ctype + body) & 0xFFFFFFFF != crc:
            raise ScoringInputError(f"{kind} file {path} is corrupt (CRC mismatch in chunk {ctype!r} at byte {pos})")
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBB", body[:10])
        pos += 12 + length
        if ctype == b"IEND":
            end = True
            break
    if ihdr is None or not end:
        missing = "IHDR" if ihdr is None else "IEND"
        raise ScoringInputError(f"{kind} file {path} is truncated or corrupt (no {missing} chunk)")
    w, h, depth, ctype = ihdr
    want_types = (0,) if kind in ("parsing", "true_mask") else (2, 6)
    if depth != 8 or ctype not in want_types:
        what = "single-channel 8-bit" if kind in ("parsing", "true_mask") else "8-bit RGB"
        raise ScoringInputError(f"{kind} file {path} must be a {what} PNG (bit depth {depth}, colour type {ctype})")
    if size is not None and (w, h) != (size, size):
        raise ScoringInputError(f"{kind} file {path} is {w}x{h}; expected {size}x{size} like the other maps")
    return w, h


@dataclass
class ImageInputs:
    img_no: int
    paths: dict           # kind -> Path
    sha: dict             # kind -> sha256 hex


def discover(stage2_dir: Path, stage3_dir: Path, kinds: tuple) -> list[ImageInputs]:
    """The image list (stage-2 filtered folder) and the files of every image; nothing is decoded here."""
    nos, filtered = list_filtered(stage2_dir, ScoringInputError)
    seg = Path(stage3_dir) / SEG_SUBDIR
    if not seg.is_dir():
        raise ScoringInputError(f"stage-3 folder {seg} not found; run run_segmentation.py first")
    out = []
    for i, n in enumerate(nos):
        paths = {}
        for k in kinds:
            paths[k] = filtered[i] if k == "original" else seg / f"{k}_{n:06d}.png"
        out.append(ImageInputs(int(n), paths, {}))
    return out


def validate_files(items: list[ImageInputs], show_progress: bool = True) -> int:
    """Read, hash and structurally check every file; returns the map size S (raises on any problem)."""
    size = None
    for it in tqdm(items, desc="stage 4: checking inputs", unit="img", disable=not show_progress):
        for kind, path in it.paths.items():
            if not path.is_file():
                raise ScoringInputError(f"{kind} file {path} is missing (image {it.img_no} is in the stage-2 "
                                       f"filtered folder)")
            data = path.read_bytes()
            w, _ = check_png(data, path, kind, None if kind == "original" else size)
            if kind == "parsing" and size is None:
                size = w
            it.sha[kind] = hashlib.sha256(data).hexdigest()
    return int(size)


def decode(path: Path, kind: str, size: int) -> np.ndarray:
    """Decode one validated input: class map uint8 [S, S] (ids 0..10) or colour uint8 [S, S, 3] (RGB)."""
    data = np.frombuffer(path.read_bytes(), np.uint8)
    if kind in ("parsing", "true_mask"):
        arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if arr is None or arr.ndim != 2 or arr.dtype != np.uint8 or arr.shape != (size, size):
            raise ScoringInputError(f"{kind} file {path} cannot be decoded as a {size}x{size} 8-bit class map")
        if int(arr.max()) > ps.NUM_CLASSES - 1:
            r, c = np.argwhere(arr > ps.NUM_CLASSES - 1)[0]
            raise ScoringInputError(f"{kind} file {path}: class id {int(arr[r, c])} at row {r}, column {c} is "
                                   f"outside 0..{ps.NUM_CLASSES - 1}")
        return arr
    arr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if arr is None:
        raise ScoringInputError(f"{kind} file {path} cannot be decoded")
    arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    if kind == "original":                       # the 1st algorithm's image: whole frame, bilinear (OpenCV)
        return cv2.resize(arr, (size, size), interpolation=cv2.INTER_LINEAR) if arr.shape[:2] != (size, size) else arr
    if arr.shape[:2] != (size, size):
        raise ScoringInputError(f"{kind} file {path} is {arr.shape[1]}x{arr.shape[0]}; expected {size}x{size}")
    return arr
