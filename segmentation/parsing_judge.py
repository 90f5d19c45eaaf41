"""Stages 3–4 as a judge of generated images: the default parser, then the 2nd property-score algorithm.

A fine-tuned generator is trained against the property-score CNN, so the CNN's reading of its
images can improve while the faces do not (the generator learns what the CNN reads). This
judge measures the same seven properties the way stages 3 and 4 measured the training set
(whole frame -> 224 bicubic -> parser -> class map -> ``scores_v2`` -> the stage-4 N(0, 1)
scale from ``all_scores_v2_norm_stats.json``), is not differentiable and takes no part in
training; FineTune-v3 can choose its shipped epoch with it (``select_judge='parsing'``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from stylegan.generator import postprocess

from .property_scores import PROPERTIES, scores_v2
from .synth_segmenter import for_inference, load_segmenter, parse_crops, whole_frame_crops


class ParsingJudge:
    """``measure(images [-1, 1] NCHW)`` -> {property: values on the stage-4 scale}."""

    def __init__(self, segmenter: torch.nn.Module, norm_stats: dict, name: str = "parsing", batch_size: int = 32):
        self.segmenter, self.name, self.batch_size = segmenter.eval(), name, int(batch_size)
        self.stats = {k[:-len("_score")]: v for k, v in norm_stats.items()}
        missing = [p for p in PROPERTIES if p not in self.stats or not self.stats[p].get("std")]
        if missing:
            raise ValueError(f"normalisation statistics lack (or have no spread for): {', '.join(missing)}")

    @classmethod
    def for_profile(cls, profile, name: str = "parsing") -> "ParsingJudge":
        seg = profile.get("segmentation", {})
        path = profile.path(seg.get("checkpoint"))
        stats_path = profile.data_root / "stage4" / "all_scores_v2_norm_stats.json"
        if path is None or not Path(path).is_file():
            raise FileNotFoundError(f"the parsing judge needs the profile's segmenter; {path} not found")
        if not stats_path.is_file():
            raise FileNotFoundError(f"the parsing judge needs {stats_path} (run compute_property_scores_v2.py)")
        return cls(for_inference(load_segmenter(path)), json.loads(stats_path.read_text())["columns"], name=name)

    def describe(self) -> dict:
        return {"kind": "stage 3-4: default parser + 2nd property-score algorithm, stage-4 normalisation"}

    @torch.inference_mode()
    def measure(self, images: torch.Tensor) -> dict:
        crops = whole_frame_crops(postprocess(images))      # the uint8 image stage 1 would have saved
        maps = parse_crops(self.segmenter, crops, self.batch_size)
        raw = scores_v2(maps, crops, with_hairstyle=False).values
        return {p: (np.asarray(raw[p], np.float64) - self.stats[p]["mean"]) / self.stats[p]["std"]
                for p in PROPERTIES}
