"""Atomic output helpers: write to a temporary file in the same folder, then rename."""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write_csv(path: str | os.PathLike, df: pd.DataFrame, float_format: str = "%.9g") -> None:
    """CSV without index; ``%.9g`` round-trips float32 exactly."""
    atomic_write_text(path, df.to_csv(index=False, float_format=float_format, lineterminator="\n"))


def encode_png(rgb: np.ndarray, path: str | os.PathLike = "") -> bytes:
    """The PNG bytes of an RGB (or single-channel) uint8 array (stored with normal colours)."""
    arr = np.ascontiguousarray(rgb)
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise OSError(f"PNG encoding failed for {path}")
    return buf.tobytes()


def atomic_write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an RGB (or single-channel) uint8 array as PNG (stored with normal colours)."""
    atomic_write_bytes(path, encode_png(rgb, path))


def write_if_different(path: str | os.PathLike, data: bytes) -> bool:
    """Atomically (re)write ``path`` unless it already holds exactly ``data``; True when written."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    atomic_write_bytes(path, data)
    return True


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_intact(path: str | os.PathLike) -> bool:
    """Cheap check of a finished PNG without decoding: signature, every chunk's CRC, an IEND chunk."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return False
    if not data.startswith(_PNG_SIGNATURE):
        return False
    pos = 8
    while pos + 12 <= len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        end = pos + 12 + length
        if end > len(data):
            return False
        if zlib.crc32(data[pos + 4:pos + 8 + length]) & 0xFFFFFFFF != struct.unpack(">I", data[end - 4:end])[0]:
            return False
        if data[pos + 4:pos + 8] == b"IEND":
            return True
        pos = end
    return False


def read_png_rgb(path: str | os.PathLike) -> np.ndarray:
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise OSError(f"cannot read image {path} (missing or corrupt)")
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    return arr


def remove_stale_tmp(folder: str | os.PathLike) -> int:
    """Delete temporary files left by killed writers (their process no longer exists)."""
    removed = 0
    for p in Path(folder).glob(".*.tmp*"):
        pid = p.name.rsplit(".tmp", 1)[-1]
        alive = False
        if pid.isdigit():
            try:
                os.kill(int(pid), 0)
                alive = int(pid) != os.getpid()
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
        if not alive:
            p.unlink(missing_ok=True)
            removed += 1
    return removed


NUMBERED_PNG_RE = re.compile(r"^(\d{6})\.png$")


def numbered_pngs(folder: str | os.PathLike) -> list[int]:
    """Sorted image numbers n of the ``NNNNNN.png`` files in ``folder`` (other files are ignored)."""
    return sorted(int(m.group(1)) for p in Path(folder).iterdir() if (m := NUMBERED_PNG_RE.match(p.name)))


def remove_unlisted(folder: str | os.PathLike, pattern: re.Pattern, keep, group: int = 1) -> int:
    """Delete the files of ``folder`` whose name matches ``pattern`` and whose image number
    (``group`` of the match) is not in ``keep``; other files stay. Returns how many went."""
    keep = {int(n) for n in keep}
    removed = 0
    for p in Path(folder).iterdir():
        m = pattern.match(p.name)
        if m and int(m.group(group)) not in keep:
            p.unlink()
            removed += 1
    return removed


def sha256_file(path: str | os.PathLike) -> str:
    """Content hash of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class InputError(ValueError):
    """An input file that is missing, malformed or does not belong; the message names file and place."""


def read_checked_png(path: str | os.PathLike, resolution: int, error: type[Exception] = InputError) -> np.ndarray:
    """One RGB image as uint8 [R, R, 3]; a missing, corrupt or wrongly sized file raises ``error`` naming it."""
    try:
        img = read_png_rgb(path)
    except OSError as exc:
        raise error(f"image file {path} cannot be read (missing or corrupt)") from exc
    if img.dtype != np.uint8 or img.shape != (resolution, resolution, 3):
        raise error(f"image file {path} has shape {img.shape} ({img.dtype}); expected "
                    f"({resolution}, {resolution}, 3) uint8 RGB for this profile")
    return img
