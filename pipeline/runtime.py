"""Run-time helpers: seeding, peak memory, timing, shard parsing, run manifests."""
from __future__ import annotations

import json
import random
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .io import InputError, atomic_write_json


class SettingsMismatch(InputError):
    """An output folder made with other settings than this run's (or with a corrupt manifest)."""


def apply_threads(threads: int) -> int:
    """Set torch's intra-op thread count (``threads`` >= 1; 0 leaves torch's default) and return the
    count in use, which stages record: results can differ by one grey level between thread counts."""
    if threads:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


# The thread count is part of every stage's recorded settings: float sums (convolutions, matmuls,
# optimiser steps) are split differently across 1 and 2 threads, so images differ by a grey level and
# trainings drift apart (measured: benchmarks/bench_threads.py). A resume under another count would mix
# the two, so it is refused. Records made before the count was recorded (no key) are accepted.
THREADS_KEY = "threads"


def thread_record() -> dict:
    """``{"threads": n}``: the intra-op thread count in use, as stages record it with their settings."""
    return {THREADS_KEY: torch.get_num_threads()}


def check_threads(recorded, where: str | Path) -> None:
    """Refuse to resume work that ``where`` records as made under another thread count."""
    now = torch.get_num_threads()
    if recorded is not None and int(recorded) != now:
        raise SettingsMismatch(f"{where} was made with {recorded} torch thread(s), this run uses {now}; "
                               f"re-run with --threads {recorded}, or use another output folder / delete it "
                               f"to start over")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> "Shard":
        if not text:
            return cls()
        try:
            i, n = (int(t) for t in text.split("/"))
        except ValueError as exc:
            raise SettingsMismatch(f"flag --shard must look like i/n (e.g. 0/4), got {text!r}") from exc
        if n < 1 or not 0 <= i < n:
            raise SettingsMismatch(f"flag --shard {text}: need 0 <= i < n")
        return cls(i, n)

    def owns(self, chunk: int) -> bool:
        return chunk % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def check_run_manifest(path: Path, settings: dict, sources: dict | None = None, threads: bool = True) -> None:
    """Record the settings of an output folder; refuse to mix outputs of different settings.

    The first run writes ``path``; a later run (resume, re-run, another shard) must
    use identical settings, otherwise a ``ValueError`` names each differing setting.
    ``sources`` (where each overridden setting came from: profile preset or flag) is
    recorded under ``"sources"`` and not compared. ``threads``: the thread count in use is part of
    the settings (:func:`thread_record`); a folder recorded without it is accepted.
    """
    settings = json.loads(json.dumps({**settings, **(thread_record() if threads else {})}, default=str))
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SettingsMismatch(f"run manifest {path} is corrupt ({exc}); delete the output folder to start over") from exc
        old.pop("sources", None)
        if THREADS_KEY not in old:
            settings.pop(THREADS_KEY, None)         # made before thread counts were recorded
        diff = {k: (old.get(k), settings.get(k)) for k in set(old) | set(settings) if old.get(k) != settings.get(k)}
        if diff:
            lines = ", ".join(f"{k}: folder has {a!r}, this run {b!r}" for k, (a, b) in sorted(diff.items()))
            raise SettingsMismatch(f"{path.parent} holds outputs made with other settings ({lines}); "
                             f"use another output folder or delete it to start over")
    else:
        atomic_write_json(path, {**settings, "sources": dict(sources)} if sources is not None else settings)
