"""The hand-label store behind the labelling page.

One :class:`LabelStore` owns the hand-label CSV files of a labelling session (stage 2's format,
see :mod:`web.label_format`) and a sidecar JSON file beside them holding what the CSVs cannot:
labels of images not finished yet (some properties given), skipped images, the position to
resume at and the order images were finished in.

Every change is written at once, under a lock (a thread lock for the tabs served by one server,
``flock`` on ``<sidecar>.lock`` for other processes on the same files):

1. the sidecar, atomically, recording the new SHA-256 of each CSV and the one still on disk;
2. each CSV whose content changed, atomically (temporary file + rename).

So a kill at any moment leaves complete files only, and on start each CSV is either the one the
sidecar describes or the one before it (then it is rewritten from the sidecar). A CSV matching
neither was changed outside the tool: the store refuses to guess and says how to go on.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import pandas as pd

from pipeline.io import atomic_write_text, remove_stale_tmp

from .label_format import LabelFormat

# the label values of each property, the key that gives each, and what it means (label 1 is the
# property being present, as in stage 2: quality 1 = good, gender 1 = female, age 1 = old,
# glass 1 = glasses)
LABEL_KEYS = {
    "quality": ((1, "g", "good"), (0, "d", "defect")),
    "gender": ((1, "f", "female"), (0, "m", "male")),
    "age": ((1, "o", "old"), (0, "y", "young")),
    "glass": ((1, "e", "eyeglasses"), (0, "n", "no glasses")),
}
SIDECAR_VERSION = 1


class LabelRequestError(ValueError):
    """A request the store cannot carry out (unknown image or property, bad value): a 4xx."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


class LabelStateError(RuntimeError):
    """The files on disk do not agree with the sidecar (or the sidecar is unreadable)."""


def sidecar_path(files: dict) -> Path:
    """The sidecar of a session: beside its first label file, ``<stem>.labeling.json``."""
    first = Path(next(iter(files.values())))
    return first.with_name(first.stem + ".labeling.json")


def _sha(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


class LabelStore:
    """Hand labels of ``images`` written to ``files`` ({file group: CSV path}).

    ``targets`` are the images to label, in order (the progress bar counts them); any image of
    ``images`` may be labelled. ``import_files``: start from the CSVs as they are, discarding an
    existing sidecar (after the CSVs were edited by hand).
    """

    def __init__(self, files: dict, fmt: LabelFormat, images: Sequence[int], targets: Sequence[int] | None = None,
                 sidecar: str | os.PathLike | None = None, import_files: bool = False):
        unknown = [g for g in files if g not in fmt.groups]
        if unknown or not files:
            raise ValueError(f"label file group(s) {unknown or '(none)'} unknown; stage 2 reads {', '.join(fmt.groups)}")
        self.fmt = fmt
        self.files = {g: Path(p) for g, p in files.items()}
        self.properties = tuple(c for g in self.files for c in fmt.groups[g])
        missing_keys = [p for p in self.properties if p not in LABEL_KEYS]
        if missing_keys:
            raise ValueError(f"no keys defined for label(s) {missing_keys}")
        self.images = sorted(int(n) for n in images)
        self._image_set = set(self.images)
        self._image_pos = {n: i for i, n in enumerate(self.images)}
        self.targets = [int(n) for n in (targets if targets is not None else self.images)]
        lost = [n for n in self.targets if n not in self._image_set]
        if lost:
            raise ValueError(f"image {lost[0]} to label is not a stage-1 image")
        self._target_pos = {n: i for i, n in enumerate(self.targets)}
        self.sidecar = Path(sidecar) if sidecar else sidecar_path(self.files)
        self._lock = threading.RLock()
        self.sidecar.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.sidecar.with_name(self.sidecar.name + ".lock"), "a+")
        with self._locked():
            self._start(import_files)

    # ------------------------------------------------------------------ locking, loading
    @contextmanager
    def _locked(self):
        """The thread lock (tabs served by this process), then ``flock`` (other processes)."""
        with self._lock:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def close(self) -> None:
        self._lock_file.close()

    def _start(self, import_files: bool) -> None:
        for folder in {p.parent for p in self.files.values()} | {self.sidecar.parent}:
            if folder.is_dir():
                remove_stale_tmp(folder)          # temporary files of a killed writer
        if self.sidecar.is_file() and not import_files:
            self._read_sidecar()
            stale = []
            for g, path in self.files.items():
                rec = self._file_rec[g]
                actual = _sha(_read_text(path))
                if actual == rec["sha256"]:
                    continue
                if actual == rec.get("prev_sha256"):
                    stale.append(g)               # killed between the sidecar and this file: finish the write
                    continue
                raise LabelStateError(
                    f"label file {path} was changed outside the labelling tool since {self.sidecar} was written "
                    f"(its content matches neither state the sidecar records). Start with --import-files to take "
                    f"the CSV files as they are (the sidecar's partial labels, skips and undo order are dropped), "
                    f"or restore the file.")
            if stale:
                self._commit(force=True)
        else:
            self._import_csvs()
            self._commit(force=True)

    def _read_sidecar(self, text: str | None = None) -> None:
        try:
            text = self.sidecar.read_text(encoding="utf-8") if text is None else text
            st = json.loads(text)
            if st.get("version") != SIDECAR_VERSION:
                raise ValueError(f"version {st.get('version')!r}, expected {SIDECAR_VERSION}")
            if tuple(st["properties"]) != self.properties:
                raise LabelStateError(f"sidecar {self.sidecar} labels {', '.join(st['properties'])}, this session "
                                      f"labels {', '.join(self.properties)}: use the same label files and properties, "
                                      f"or another output file")
            labels = {int(n): {str(p): int(v) for p, v in d.items()} for n, d in st["labels"].items()}
            file_rec = {g: dict(st["files"][g]) for g in self.files}
            skipped = {int(n) for n in st.get("skipped", [])}
            order = [int(n) for n in st.get("order", [])]
            position = st.get("position")
        except LabelStateError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LabelStateError(f"sidecar {self.sidecar} is not a labelling state file ({exc}); move it away and "
                                  f"start with --import-files to rebuild it from the CSV files") from exc
        self.labels, self._file_rec, self.skipped, self.order = labels, file_rec, skipped, order
        self.position = None if position is None else int(position)
        self._sidecar_text = text

    def _import_csvs(self) -> None:
        """Start from the label CSVs that exist (read and validated by stage 2's reader)."""
        self.labels, self.skipped, self.order, self.position = {}, set(), [], None
        self._file_rec = {g: {"sha256": None, "prev_sha256": None} for g in self.files}
        for g, path in self.files.items():
            text = _read_text(path)
            self._file_rec[g] = {"sha256": _sha(text), "prev_sha256": None}
            if text is None or text.strip() == ",".join(("img_name",) + self.fmt.groups[g]):
                continue                          # no file yet, or a header only
            df = self.fmt.read(path, self.fmt.groups[g])
            for row in df.itertuples(index=False):
                n = int(row.img_name)
                if n not in self._image_set:
                    raise LabelStateError(f"label file {path}, image {n}: not a stage-1 image of this session")
                self.labels.setdefault(n, {}).update({c: int(getattr(row, c)) for c in self.fmt.groups[g]})
        self.order = [n for n in sorted(self.labels) if self._complete(n)]

    # ------------------------------------------------------------------ writing
    def _csv_text(self, group: str) -> str:
        cols = self.fmt.groups[group]
        done = sorted(n for n in self.labels if self._complete(n))
        df = pd.DataFrame({"img_name": done, **{c: [self.labels[n][c] for n in done] for c in cols}},
                          columns=["img_name", *cols], dtype="int64")
        return df.to_csv(index=False, lineterminator="\n")

    def _commit(self, force: bool = False, csv: bool = True) -> None:
        """Write the sidecar, then the CSVs (``csv=False``: the change cannot touch them)."""
        texts = {g: self._csv_text(g) for g in self.files} if csv or force else {}
        changed = []
        for g, text in texts.items():
            sha = _sha(text)
            rec = self._file_rec[g]
            if sha != rec["sha256"] or force:
                if sha != rec["sha256"]:
                    rec["prev_sha256"] = rec["sha256"]
                rec["sha256"] = sha
                changed.append(g)
        state = {"version": SIDECAR_VERSION, "tool": "run_labeling.py", "properties": list(self.properties),
                 "files": {g: {"path": str(self.files[g]), **self._file_rec[g]} for g in self.files},
                 "labels": {str(n): self.labels[n] for n in sorted(self.labels)},
                 "skipped": sorted(self.skipped), "order": self.order, "position": self.position}
        text = json.dumps(state, separators=(",", ":")) + "\n"
        atomic_write_text(self.sidecar, text)
        self._sidecar_text = text
        for g in changed:
            if force and _read_text(self.files[g]) == texts[g]:
                continue
            atomic_write_text(self.files[g], texts[g])

    def _refresh(self) -> None:
        """Take the state on disk when another process changed it (the content is compared: a
        file stamp could miss a change within the file system's time granularity)."""
        text = self.sidecar.read_text(encoding="utf-8")
        if text != self._sidecar_text:
            self._read_sidecar(text)

    # ------------------------------------------------------------------ queries
    def _complete(self, n: int) -> bool:
        d = self.labels.get(n)
        return d is not None and all(p in d for p in self.properties)

    def _check_image(self, img_no) -> int:
        try:
            n = int(img_no)
        except (TypeError, ValueError):
            raise LabelRequestError(f"image number {img_no!r} is not an integer") from None
        if isinstance(img_no, float) and img_no != n:
            raise LabelRequestError(f"image number {img_no!r} is not an integer")
        if n not in self._image_set:
            raise LabelRequestError(f"image {n} is not a stage-1 image of this session "
                                    f"(images {self.images[0]}..{self.images[-1]})" if self.images else
                                    f"image {n}: this session has no images", status=404)
        return n

    def progress(self) -> dict:
        with self._locked():
            self._refresh()
            return self._progress()

    def _progress(self) -> dict:
        done = sum(1 for n in self.targets if self._complete(n))
        return {"labelled": done, "total": len(self.targets),
                "labelled_all": sum(1 for n in self.labels if self._complete(n))}

    def next_unlabelled(self, after: int | None = None) -> int | None:
        """The first target after ``after`` (cyclic) not labelled and not skipped; else the first
        skipped one still unlabelled; None when every target is labelled."""
        if not self.targets:
            return None
        if after is None:
            start = 0
        elif after in self._target_pos:
            start = self._target_pos[after] + 1
        else:                                     # an image outside the targets: the first target after it
            start = next((i for i, n in enumerate(self.targets) if n > after), 0)
        ring = self.targets[start:] + self.targets[:start]
        todo = [n for n in ring if not self._complete(n)]
        fresh = [n for n in todo if n not in self.skipped]
        return (fresh or todo or [None])[0]

    def view(self, img_no) -> dict:
        """What the page shows for one image."""
        with self._locked():
            self._refresh()
            n = self._check_image(img_no)
            return self._view(n)

    def _view(self, n: int) -> dict:
        i = self._image_pos[n]
        return {"img_no": n, "labels": dict(self.labels.get(n, {})), "complete": self._complete(n),
                "skipped": n in self.skipped, "target": n in self._target_pos,
                "prev": self.images[i - 1] if i > 0 else None,
                "next": self.images[i + 1] if i + 1 < len(self.images) else None,
                "next_unlabelled": self.next_unlabelled(n), "progress": self._progress()}

    def resume(self) -> dict:
        """The image to show first: the stored position while it is unfinished, else the next unlabelled."""
        with self._locked():
            self._refresh()
            pos = self.position if self.position in self._image_set else None
            n = pos
            if n is None or self._complete(n):
                n = self.next_unlabelled(n)
            if n is None:                         # everything labelled: where it stopped
                n = pos if pos is not None else (self.targets[-1] if self.targets else None)
            return None if n is None else self._view(n)

    def labels_frame(self) -> pd.DataFrame:
        """The finished labels: ``img_name`` + one column per property, sorted by image."""
        with self._locked():
            self._refresh()
            done = sorted(n for n in self.labels if self._complete(n))
            return pd.DataFrame({"img_name": done, **{p: [self.labels[n][p] for n in done] for p in self.properties}},
                                columns=["img_name", *self.properties], dtype="int64")

    # ------------------------------------------------------------------ changes
    def set_label(self, img_no, prop, value) -> dict:
        """Give image ``img_no`` label ``value`` (0 / 1) for ``prop``; written before returning."""
        if prop not in self.properties:
            raise LabelRequestError(f"unknown label {prop!r}; this session labels {', '.join(self.properties)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in (0, 1):
            raise LabelRequestError(f"label value {value!r} for {prop} is out of range (must be 0 or 1)")
        with self._locked():
            self._refresh()
            n = self._check_image(img_no)
            was_complete = self._complete(n)
            self.labels.setdefault(n, {})[prop] = int(value)
            if self._complete(n):
                if n not in self.order:
                    self.order.append(n)
                self.skipped.discard(n)
            self.position = n
            self._commit(csv=was_complete or self._complete(n))
            return self._view(n)

    def clear(self, img_no=None) -> dict | None:
        """Undo: remove every label of ``img_no`` (default: the image finished last). None when
        there is nothing to undo."""
        with self._locked():
            self._refresh()
            if img_no is None:
                if not self.order:
                    return None
                img_no = self.order[-1]
            n = self._check_image(img_no)
            was_complete = self._complete(n)
            self.labels.pop(n, None)
            self.order = [m for m in self.order if m != n]
            self.position = n
            self._commit(csv=was_complete)
            return self._view(n)

    def skip(self, img_no) -> dict:
        """Leave ``img_no`` for later; returns the view of the next image to label."""
        with self._locked():
            self._refresh()
            n = self._check_image(img_no)
            if not self._complete(n):
                self.skipped.add(n)
            nxt = self.next_unlabelled(n)
            self.position = n if nxt is None else nxt
            self._commit(csv=False)
            return self._view(self.position)

    def goto(self, img_no) -> dict:
        """Jump to ``img_no`` (recorded as the position to resume at)."""
        with self._locked():
            self._refresh()
            n = self._check_image(img_no)
            if self.position != n:
                self.position = n
                self._commit(csv=False)
            return self._view(n)
