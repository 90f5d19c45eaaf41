"""The three judges as VectorFind property scorers (``vectorfind.protocols.PropertyScorer``).

A scorer takes images [N, 3, H, W] in [-1, 1] and returns name -> float32 [N] holding at least
the controlled properties (eyes, mouth, pose) and the four group properties (hair_color,
hair_length, background_mean, hairstyle).

* ``property_cnn``: the property-score CNN (the original's judge). The original's *merged* CNN
  had an 8th output, hairstyle; the shipped synthface property CNN has only the seven stage-4
  properties (``pipeline.vocabulary.PROPERTIES``), so its scorer takes ``hairstyle`` (used only
  to split the samples into the 16 groups) from a second judge, ``hairstyle_from`` (the
  evaluator by default on synthface; the stages 3–4 parser's hairstyle algorithm on request).
  Eval mode by default; ``dropout=True`` is the original's train-mode measurement (seeded by
  ``dropout_seed`` and the call count, or unseeded with ``dropout_seed=None``).
* ``evaluator``: the independent synthface evaluator (its own hairstyle output).
* ``parsing``: stages 3–4 as a judge (default parser + the 2nd property-score algorithm, with
  the hairstyle of spec 02 §1.2); on the stage-4 N(0, 1) scale when the normalisation file
  exists, else raw (r and the pass rule do not depend on an affine scale).

The JPEG round trip (OpenCV quality 95) is applied by the caller (``vectorfind.sampling``).
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.vocabulary import PROPERTIES as P7
from segmentation.parsing_judge import ParsingJudge
from segmentation.property_scores import PROPERTIES as PARSED, scores_v2
from segmentation.synth_segmenter import parse_crops, whole_frame_crops
from stylegan.generator import postprocess

from .judges import EvaluatorJudge, PropertyCNNJudge

JUDGE_NAMES = ("property_cnn", "evaluator", "parsing")


class JudgeScorer:
    """A judge's ``measure`` as a PropertyScorer; missing ``hairstyle`` comes from ``hairstyle_from``."""

    def __init__(self, judge, name: str | None = None, hairstyle_from=None):
        self.judge, self.hairstyle_from = judge, hairstyle_from
        self.name = name or getattr(judge, "name", "judge")

    def describe(self) -> dict:
        d = dict(self.judge.describe()) if hasattr(self.judge, "describe") else {}
        if self.hairstyle_from is not None:
            d["hairstyle_from"] = getattr(self.hairstyle_from, "name", "judge")
        return d

    def __call__(self, images: torch.Tensor, memo: dict | None = None) -> dict:
        """Scores of ``images``; ``memo`` (one dict per image batch, shared by several scorers) keeps
        each judge's measurement, so a judge that is both a test judge and another's hairstyle
        source measures the batch once (a judge gives the same numbers for the same batch)."""
        out = {k: np.asarray(v, np.float32).reshape(-1) for k, v in measure_once(self.judge, images, memo).items()}
        if "hairstyle" not in out:
            if self.hairstyle_from is None:
                raise ValueError(f"judge {self.name} has no hairstyle output and no hairstyle judge was given")
            hs = measure_once(self.hairstyle_from, images, memo)["hairstyle"]
            out["hairstyle"] = np.asarray(hs, np.float32).reshape(-1)
        return out


def measure_once(judge, images: torch.Tensor, memo: dict | None) -> dict:
    """``judge.measure(images)``, looked up in / stored into ``memo`` (by judge object) when given."""
    if memo is None:
        return judge.measure(images)
    key = id(judge)
    if key not in memo:
        memo[key] = (judge, judge.measure(images))       # the judge is kept so its id stays its own
    return memo[key][1]


class ParsingHairstyleJudge(ParsingJudge):
    """Stages 3–4 as a judge, with the hairstyle score (spec 02 §1.2) beside the seven properties."""

    @torch.inference_mode()
    def measure(self, images: torch.Tensor) -> dict:
        crops = whole_frame_crops(postprocess(images))
        maps = parse_crops(self.segmenter, crops, self.batch_size)
        raw = scores_v2(maps, crops, with_hairstyle=True).values
        out = {p: (np.asarray(raw[p], np.float64) - self.stats[p]["mean"]) / self.stats[p]["std"] for p in PARSED}
        out["hairstyle"] = np.asarray(raw["hairstyle"], np.float64)
        return out


def identity_stats() -> dict:
    """Normalisation statistics that leave the parser's raw scores as they are."""
    return {f"{p}_score": {"mean": 0.0, "std": 1.0} for p in PARSED}


def property_cnn_scorer(model, hairstyle_from, dropout: bool = False, dropout_seed: int | None = 0) -> JudgeScorer:
    judge = PropertyCNNJudge(model, dropout=dropout, dropout_seed=0 if dropout_seed is None else dropout_seed)
    if dropout and dropout_seed is None:            # the original: unseeded train-mode dropout
        judge.measure = _unseeded(judge)
    return JudgeScorer(judge, "property_cnn", hairstyle_from)


def _unseeded(judge: PropertyCNNJudge):
    def measure(images):
        was = judge.model.training
        try:
            with torch.inference_mode():
                judge.model.train(True)
                out = judge.model(images).cpu().numpy()
        finally:
            judge.model.train(was)
        return {p: out[:, i] for i, p in enumerate(P7)}
    return measure


def evaluator_scorer(evaluator, calibration: dict | None = None) -> JudgeScorer:
    return JudgeScorer(EvaluatorJudge(evaluator, calibration=calibration), "evaluator")


def parsing_scorer(segmenter, norm_stats: dict | None = None) -> JudgeScorer:
    return JudgeScorer(ParsingHairstyleJudge(segmenter, norm_stats or identity_stats()), "parsing")
