"""Face-parsing backends: a cropper (whole frame or a face detector) and a parser behind one interface.

``crop(list of uint8 RGB images) -> list[CropResult]`` and ``parse(normalised [B, 3, 224, 224]) ->
uint8 class maps [B, 224, 224]``. ``WholeFrameBackend`` (synthface: the whole aligned frame resized
to 224, parsed by the default segmenter) and ``DetectorBackend`` (a face detector-cropper + a parser,
celeba256: MTCNN + FaceXFormer).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import cv2
import numpy as np
import torch

from pipeline.vocabulary import PALETTE

from .synth_segmenter import CROP_SIZE, for_inference, normalise, resize_mask_nearest, whole_frame_crops

ON_NO_FACE = ("whole_frame", "skip")


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
        self.model = for_inference(model)          # channels-last: 1.3-1.4x per batch, same class maps
        self.size = size
        self._info = info or {}

    def info(self) -> dict:
        return {"backend": self.name, "crop": f"whole frame -> {self.size} bicubic", **self._info}

    def crop(self, images: Sequence[np.ndarray]) -> list[CropResult]:
        return whole_frame_results(images, self.size, detected=True)

    @torch.inference_mode()
    def parse(self, x: torch.Tensor) -> np.ndarray:
        return self.model(x.contiguous(memory_format=torch.channels_last)).argmax(1).to(torch.uint8).numpy()


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


def overlay(crop: np.ndarray, class_map: np.ndarray) -> np.ndarray:
    """50/50 blend of the crop and the class map in the FaceXFormer palette (uint8 RGB)."""
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
