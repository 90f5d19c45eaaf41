"""The one fine-tune loop of stage 5 (FineTune-v1 / v4, v3; v9 next): a trainer plugs in through
:class:`training.trainer.Trainer`.

The loop owns what every fine-tuning shares:

* resume: ``train_state.pth`` (trainer state + the loop's log, epoch, step, phase) is written every
  ``checkpoint_every`` steps and at each epoch's end; a run with other settings is refused, naming
  each one; a finished run skips straight to the stage's test and report;
* shipped-run install (:mod:`pipeline.shipped`): when no state exists and the settings match, the
  committed run is installed instead of training (its models loaded strictly into the trainer's);
* the progress bar (tqdm, the trainer's figures of the step);
* per-epoch snapshots: ``checkpoints/epoch_NNNN_{gen,dis,enc}.pth`` of the trainer's models;
* the per-epoch ``evaluate`` hook (the stage's generation test, or a monitoring grid) and the
  best-epoch choice: the evaluation's ``score`` tuple, larger is better; the best epoch's models
  become ``<name>.pth`` with ``best.json`` (without scores, the last epoch's models);
* timing: wall and CPU seconds of the training steps, seconds of the evaluations.

The log (:class:`LoopResult.log`) holds ``rows`` (one per step), ``epoch_rows`` (the trainer's
per-epoch figures), ``tests`` (one entry per evaluated epoch), ``best``, ``seconds``,
``cpu_seconds``, ``test_seconds`` and ``init_done`` (what the start did).
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from tqdm import tqdm

from pipeline.checkpoint import load_state_dict_strict, read_checkpoint, save_checkpoint
from pipeline.io import atomic_write_json
from pipeline.latents import write_z_csv
from pipeline.runtime import THREADS_KEY, check_threads, thread_record
from pipeline.shipped import install_run
from stylegan_modified.distributed import DistContext, epoch_batches
from stylegan_modified.loading import save_state_dict

from .trainer import Trainer

STATE_FILE = "train_state.pth"
SNAPSHOT_SUFFIX = {"generator": "gen", "discriminator": "dis", "encoder": "enc"}


@dataclass
class LoopSettings:
    name: str                       # progress-bar and message label ("v1", "v3")
    epochs: int
    batch_size: int                 # global batch
    seed: int
    checkpoint_every: int           # steps between resumable snapshots
    max_steps_per_epoch: int | None = None
    drop_last: bool = False


@dataclass
class ShippedRun:
    """Where a committed run may come from and what it must share with this one (``pipeline.shipped``)."""
    folder: Path | None
    settings: dict
    bases: Callable[[], Mapping] | Mapping | None = None
    img_nos: object = None


@dataclass
class LoopResult:
    log: dict
    trained_now: bool
    installed: bool = False
    shipped_record: dict | None = None


@dataclass
class Evaluation:
    """What the per-epoch ``evaluate`` hook returns: the log entry (kept in ``log['tests']``), the
    score that chooses the best epoch (None: no choice), whether the epoch's models are kept as a
    snapshot, and latents written beside the models (``files``: name -> z array; ``best_files``
    only when the epoch becomes the best; ``best_extra``: added to the best entry)."""
    entry: dict
    score: tuple | None = None
    keep_snapshot: bool = True
    files: dict = field(default_factory=dict)
    best_files: dict = field(default_factory=dict)
    best_extra: dict = field(default_factory=dict)


def settings_key(settings, exclude=("epochs",)) -> dict:
    """The settings a resumed / re-run training must share with the stored one (JSON-normalised)."""
    d = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings)
    return json.loads(json.dumps({k: v for k, v in d.items() if k not in exclude}, default=str))


def diff_settings(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}: stored {old.get(k)!r}, now {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def load_state(path: Path, key: dict) -> dict | None:
    """The stored training state when it exists; a state made with other settings is an error naming them."""
    path = Path(path)
    if not path.is_file():
        return None
    state = read_checkpoint(path)
    stored = json.loads(state["settings_json"])
    if stored != key:
        raise ValueError(f"{path} was written with other settings ({diff_settings(stored, key)}); "
                         f"use another --out folder or delete it")
    check_threads(state.get(THREADS_KEY), path)       # a resume under another thread count would mix the two
    return state


def new_log(init_done: dict | None = None) -> dict:
    return {"rows": [], "epoch_rows": [], "tests": [], "best": None, "seconds": 0.0, "cpu_seconds": 0.0,
            "test_seconds": 0.0, "init_done": init_done}


def log_from_record(record: Mapping, init_done: dict | None) -> tuple[dict, int, int, str]:
    """``(log, epoch, step, phase)`` from a state or a shipped record: the loop's format (``log_json``)
    or the two it replaced (v1 / v4: ``history`` rows + ``seconds``; v3: ``history_json``)."""
    log = new_log(init_done)
    if "log_json" in record:
        log.update(json.loads(record["log_json"]))
    elif "history_json" in record:
        h = json.loads(record["history_json"])
        log.update({k: v for k, v in h.items() if k != "seconds_total"})
    else:
        log.update(rows=list(record["history"]), seconds=float(record["seconds"]),
                   cpu_seconds=float(record.get("cpu_seconds", 0.0)),
                   init_done=record.get("init_done", init_done))
    if log.get("init_done") is None:
        log["init_done"] = init_done
    return log, int(record["epoch"]), int(record["step"]), record.get("phase", "train")


class FineTuneLoop:
    """One fine-tuning run of ``trainer`` on ``data`` (a :class:`pipeline.kept_set.KeptSet`) into ``out``."""

    def __init__(self, trainer: Trainer, data, out: Path, s: LoopSettings, key: dict, ctx: DistContext,
                 show_progress: bool = True):
        self.trainer, self.data, self.out, self.s, self.key, self.ctx = trainer, data, Path(out), s, key, ctx
        self.show_progress = show_progress and ctx.is_main
        self.log = new_log()
        self.epoch, self.step, self.phase = 0, 0, "train"
        self.installed, self.shipped_record = False, None

    # -------------------------------------------------------------------------------- start

    def start(self, init_done: dict | None, shipped: ShippedRun | None = None) -> None:
        """Resume from the state file, else install the shipped run when it applies, else start fresh."""
        state = load_state(self.out / STATE_FILE, self.key)
        record = None
        if state is None and self.ctx.world == 1 and shipped is not None:
            record = install_run(shipped.folder, self.out, shipped.settings, shipped.bases, img_nos=shipped.img_nos)
        if record is not None:
            self.installed, self.shipped_record = True, record
            for name, model in self.trainer.models().items():
                path = self.out / f"{name}.pth"
                if path.is_file():
                    load_state_dict_strict(model, read_checkpoint(path), what=f"installed {name} {path}")
        elif state is not None:
            self.trainer.load(state)
        source = record if record is not None else state
        if source is not None:
            self.log, self.epoch, self.step, self.phase = log_from_record(source, init_done)
        else:
            self.log = new_log(init_done)

    # -------------------------------------------------------------------------------- run

    def run(self, evaluate: Callable[[int], Evaluation | None] | None = None) -> LoopResult:
        """Train the remaining epochs (evaluating each); returns the log. Only rank 0 writes files."""
        s, ctx, trainer = self.s, self.ctx, self.trainer
        trained_now = self.epoch < s.epochs
        while self.epoch < s.epochs:
            if self.phase == "train":
                self._train_epoch()
                self.phase = "evaluate"
                self._snapshot()
            if ctx.is_main:
                t0 = time.perf_counter()
                result = evaluate(self.epoch) if evaluate is not None else None
                self.log["test_seconds"] += time.perf_counter() - t0
                self._end_epoch(result)
            self.epoch, self.step, self.phase = self.epoch + 1, 0, "train"
            self._snapshot()
        if ctx.is_main and (trained_now or not self._final_models_exist()) and self.log["best"] is None:
            self._save_models(self.out, "{name}.pth")
        return LoopResult(self.log, trained_now, self.installed, self.shipped_record)

    def _train_epoch(self) -> None:
        s, ctx, trainer = self.s, self.ctx, self.trainer
        batches = epoch_batches(len(self.data), s.batch_size, s.seed, self.epoch, ctx, drop_last=s.drop_last)
        if s.max_steps_per_epoch:
            batches = batches[:s.max_steps_per_epoch]
        bar = tqdm(total=len(batches), initial=self.step, desc=f"{s.name} epoch {self.epoch}",
                   disable=not self.show_progress)
        t0, c0 = time.perf_counter(), time.process_time()
        while self.step < len(batches):
            x, y = self.data.batch(batches[self.step])
            row = trainer.train_step(x.to(ctx.device), y.to(ctx.device), self.epoch, self.step)
            self.log["rows"].append(row)
            self.step += 1
            bar.update(1)
            bar.set_postfix(_postfix(trainer, row))
            if self.step % s.checkpoint_every == 0 and self.step < len(batches):
                self._snapshot(t0, c0)
        bar.close()
        figures = trainer.end_epoch(self.epoch)
        if figures:
            self.log["epoch_rows"].append(figures)
        self.log["seconds"] += time.perf_counter() - t0
        self.log["cpu_seconds"] += time.process_time() - c0

    def _end_epoch(self, result: Evaluation | None) -> None:
        """Snapshot models, record the evaluation, keep the best epoch's models."""
        out, e = self.out, self.epoch
        if result is None or result.keep_snapshot:
            self._save_models(out / "checkpoints", f"epoch_{e:04d}_{{suffix}}.pth")
            for name, z in result.files.items() if result is not None else ():
                write_z_csv(out / name, z)
        if result is not None:
            self.log["tests"] = [t for t in self.log["tests"] if t["epoch"] != e] + [result.entry]
            best = self.log["best"]
            if result.score is not None and (best is None or tuple(result.score) > tuple(best["score"])
                                             or not self._final_models_exist()):
                self._save_models(out, "{name}.pth")
                for name, z in result.best_files.items():
                    write_z_csv(out / name, z)
                self.log["best"] = {**result.entry, "score": list(result.score), **result.best_extra}
                atomic_write_json(out / "best.json", self.log["best"])

    # -------------------------------------------------------------------------------- files

    def _final_models_exist(self) -> bool:
        return all((self.out / f"{name}.pth").is_file() for name in self.trainer.models())

    def _save_models(self, folder: Path, pattern: str) -> None:
        for name, model in self.trainer.models().items():
            save_state_dict(model, folder / pattern.format(name=name, suffix=SNAPSHOT_SUFFIX.get(name, name)))

    def _snapshot(self, t0: float | None = None, c0: float | None = None) -> None:
        """The resumable state (rank 0 writes; every rank waits). Mid-epoch, the running epoch's
        seconds so far are included."""
        if self.ctx.is_main:
            log = dict(self.log)
            if t0 is not None:
                log["seconds"] = log["seconds"] + time.perf_counter() - t0
                log["cpu_seconds"] = log["cpu_seconds"] + time.process_time() - c0
            save_checkpoint({**self.trainer.state(), "settings_json": json.dumps(self.key, sort_keys=True),
                             **thread_record(), "log_json": json.dumps(log), "epoch": self.epoch, "step": self.step,
                             "phase": self.phase}, self.out / STATE_FILE)
        self.ctx.barrier()


def _postfix(trainer: Trainer, row: dict) -> dict:
    """The progress bar's figures: the trainer's choice (``progress(row)``, optional) or the row's first four."""
    pick = getattr(trainer, "progress", None)      # optional: cosmetic only, not part of the Trainer protocol
    if pick is not None:
        return pick(row)
    figs = [(k, v) for k, v in row.items() if isinstance(v, float)][:4]
    return {k: f"{v:.3f}" for k, v in figs}


def epoch_means(rows: list, epoch: int, weight: str = "n", skip=("epoch", "batch_idx", "idx")) -> dict:
    """Per-epoch figures: the mean of every numeric column of the epoch's rows, weighted by ``weight``."""
    rs = [r for r in rows if r["epoch"] == epoch]
    n = np.array([r.get(weight, 1) for r in rs], np.float64)
    out = {"epoch": epoch, "batch_idx": "-"}
    for k in rs[0]:
        if k not in skip and k != weight:
            out[k] = float(np.sum(np.asarray([r[k] for r in rs], np.float64) * n) / n.sum())
    return out
