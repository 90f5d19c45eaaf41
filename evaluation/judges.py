"""Judges of generated images (spec 04 §5.5): anything that measures properties of a batch of images.

* :class:`Renderer` / :class:`Judge`: the two protocols the generation test talks to; any
  renderer of (z, label) can be tested (:class:`GeneratorAdapter` wraps a plain function);
* :class:`PropertyCNNJudge`: the property-score CNN (the original's judge);
* :class:`EvaluatorJudge`: the synthface independent evaluator, calibrated to label units by
  :func:`evaluator_calibration` (cached per kept set with ``cache_dir``: :func:`calibration_cache`);
* stages 3-4 as a judge: :class:`segmentation.parsing_judge.ParsingJudge` (a model-level tool
  with the same ``measure``), built by :func:`parsing_judge`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from pipeline.io import atomic_write_json
from pipeline.vocabulary import PROPERTIES as P7
from segmentation.parsing_judge import ParsingJudge
from stylegan.generator import postprocess


# ------------------------------------------------------------------------------------ protocols

class Renderer(Protocol):
    label_names: tuple
    z_dim: int

    def render(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor: ...


class Judge(Protocol):
    name: str

    def measure(self, images: torch.Tensor) -> dict: ...


@dataclass
class GeneratorAdapter:
    """Wraps any ``render(z, label) -> images [-1, 1]`` callable (e.g. FineTune-v9) as a generator."""
    render_fn: Callable
    label_names: tuple
    z_dim: int

    def render(self, z, label):
        with torch.inference_mode():
            return self.render_fn(z, label)


class PropertyCNNJudge:
    """The property-score CNN as judge (the original's), in eval mode.

    ``dropout=True`` reproduces the original's measurement with dropout active (defect D7),
    seeded by ``dropout_seed`` and the call count; the model's mode is restored afterwards."""

    def __init__(self, model: torch.nn.Module, name: str = "property_cnn", dropout: bool = False,
                 dropout_seed: int = 0):
        self.model, self.name, self.dropout, self.dropout_seed = model, name, bool(dropout), int(dropout_seed)
        self._calls = 0

    def describe(self) -> dict:
        return {"kind": "property-score CNN",
                "mode": f"train (dropout on, seed {self.dropout_seed})" if self.dropout else "eval"}

    def measure(self, images: torch.Tensor) -> dict:
        was = self.model.training
        try:
            with torch.inference_mode(), torch.random.fork_rng():
                torch.manual_seed(self.dropout_seed + self._calls)
                self.model.train(self.dropout)
                out = self.model(images).cpu().numpy()
        finally:
            self.model.train(was)
            self._calls += 1
        return {p: out[:, i] for i, p in enumerate(P7)}


EVALUATOR_NAMES = {"eyes_open": "eyes", "mouth_open": "mouth", "bg_mean": "background_mean",
                   "bg_std": "background_std"}


class EvaluatorJudge:
    """The synthface independent evaluator (``synthface.evaluator.Evaluator``) as a second judge.

    Images are post-processed to uint8 (what a saved image holds) and passed to
    ``evaluator.predict``; its names are mapped to the project's (``eyes_open`` -> ``eyes``,
    ``mouth_open`` -> ``mouth``, ``bg_mean`` / ``bg_std`` -> ``background_mean`` / ``_std``;
    the others — hair_color, hair_length, pose, hairstyle, female, glasses, old,
    quality_defect — keep theirs). It measures world-parameter units, not label units:
    ``calibration`` = {name: (scale, offset)} maps them (value · scale + offset) so that MAE and
    the thresholds mean the same as for the property CNN; r only depends on the sign of scale."""

    def __init__(self, evaluator, name: str = "evaluator", calibration: dict | None = None, batch_size: int = 128):
        self.evaluator, self.name, self.batch_size = evaluator, name, int(batch_size)
        self.calibration = dict(calibration or {})

    def describe(self) -> dict:
        return {"kind": "synthface independent evaluator", "calibration": self.calibration}

    def measure(self, images: torch.Tensor) -> dict:
        pred = self.evaluator.predict(postprocess(images), batch_size=self.batch_size)
        out = {EVALUATOR_NAMES.get(k, k): np.asarray(v, dtype=np.float64) for k, v in pred.items()}
        for k, (a, b) in self.calibration.items():
            out[k] = out[k] * float(a) + float(b)
        return out


# ------------------------------------------------------------------------------------ building the judges

def evaluator_calibration(evaluator, images_u8_nchw: torch.Tensor, labels: np.ndarray, label_names,
                          batch_size: int = 128, cache_dir: str | Path | None = None) -> dict:
    """Affine maps (scale, offset) from the evaluator's world units to label units, fitted by least
    squares on the kept set (its images and their labels); keys are the project's property names.

    ``cache_dir``: keep the result in ``<cache_dir>/<key>.json``, the key being the sha256 of
    everything it depends on (the evaluator's tensors, the images, the labels and their names, the
    batch size, torch's version and thread count), so the stage-5 scripts that judge with the
    evaluator (oracle, v1, v3, final) compute it once per kept set instead of once each."""
    labels = np.asarray(labels)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{_calibration_key(evaluator, images_u8_nchw, labels, label_names, batch_size)}.json"
        try:
            cached = json.loads(path.read_text())
            return {p: (float(cached[p][0]), float(cached[p][1])) for p in label_names if p in cached}
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            pass                                         # absent or unreadable: compute (and rewrite)
    names = {"eyes": "eyes_open", "mouth": "mouth_open", "pose": "pose", "hair_color": "hair_color",
             "hair_length": "hair_length", "background_mean": "bg_mean", "background_std": "bg_std"}
    imgs = images_u8_nchw.permute(0, 2, 3, 1).contiguous().numpy()
    pred = evaluator.predict(imgs, batch_size=batch_size)
    out = {}
    for j, p in enumerate(label_names):
        if p in names and names[p] in pred:
            x = np.asarray(pred[names[p]], np.float64)
            a, b = np.polyfit(x, labels[:, j].astype(np.float64), 1)
            out[p] = (float(a), float(b))
    if path is not None:
        atomic_write_json(path, {p: list(v) for p, v in out.items()})
    return out


def _calibration_key(evaluator, images_u8_nchw: torch.Tensor, labels: np.ndarray, label_names,
                     batch_size: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([torch.__version__, torch.get_num_threads(), int(batch_size), list(label_names),
                         list(evaluator.spec.continuous), list(evaluator.spec.binary)]).encode())
    for k, v in evaluator.net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    h.update(np.asarray(evaluator.spec.mean, np.float32).tobytes() + np.asarray(evaluator.spec.std, np.float32).tobytes())
    h.update(str(tuple(images_u8_nchw.shape)).encode())
    h.update(images_u8_nchw.contiguous().numpy().tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.float64).tobytes())
    return h.hexdigest()


CALIBRATION_CACHE = "evaluator_calibration_cache"


def calibration_cache(data_root) -> Path:
    """Where the stage-5 scripts keep :func:`evaluator_calibration` results (derived data, content-keyed:
    safe to delete)."""
    return Path(data_root) / "stage5" / CALIBRATION_CACHE


def make_judges(property_cnn, evaluator, calibration: dict | None = None, dropout: bool = False,
                dropout_seed: int = 0) -> list:
    judges = []
    if property_cnn is not None:
        judges.append(PropertyCNNJudge(property_cnn, dropout=dropout, dropout_seed=dropout_seed))
    if evaluator is not None:
        judges.append(EvaluatorJudge(evaluator, calibration=calibration))
    return judges


def parsing_judge(profile) -> ParsingJudge:
    """Stages 3-4 as a judge (the stage-3 parser and the stage-4 scorer on the profile's files)."""
    return ParsingJudge.for_profile(profile)
