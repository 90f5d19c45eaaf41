"""Face crop for the face parser: MTCNN detection, 25 % margin, bicubic 224x224, ImageNet normalisation.

Reproduces the original stage-3 pre-processing (spec ``01_pipeline_v1.md`` §3.2,
``03_reference_models.md`` §2.4 and §3):

1. facenet-pytorch ``MTCNN(keep_all=True)`` with its defaults (min face 20, thresholds
   0.6/0.7/0.7, factor 0.709, ``select_largest=True``); ``detect`` sorts the boxes by area,
   largest first, and the first one is used (not the most confident one).
2. Each side of the box moves outwards by 25 % of the box width (left, right) or height
   (top, bottom), the result is clipped to the image, and every coordinate is truncated
   with ``int()``.
3. PIL crop, torchvision ``Resize((224, 224), BICUBIC)`` on the PIL image (aspect ratio not
   kept), ``ToTensor``, ``Normalize`` with the ImageNet mean and std.

The MTCNN weights are the P/R/O-net files inside the facenet-pytorch wheel; nothing is
downloaded. When no face is found the original crashed; here ``on_no_face`` decides:
``"skip"`` returns no crop, ``"whole_frame"`` resizes the whole image instead. Either way the
result says so (``box is None``) and :attr:`FaceCropper.counts` keeps the tally.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.transforms import InterpolationMode

CROP_SIZE = 224
MARGIN = 0.25                     # per side, as a fraction of the box width / height
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ON_NO_FACE = ("skip", "whole_frame")


def crop_transform(size: int = CROP_SIZE) -> T.Compose:
    """PIL image → normalised float32 tensor [3, size, size] (bicubic resize, ToTensor, ImageNet norm)."""
    return T.Compose([
        T.Resize((size, size), interpolation=InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ])


def denormalize_to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """Normalised [3, H, W] tensor → uint8 [H, W, 3]: ``floor(255 · clamp(x · std + mean, 0, 1))``.

    This is how the original recovered the crop it saved as ``face_*.png`` (truncation, so a
    value can be one level below the bicubic crop).
    """
    mean = torch.tensor(IMAGENET_MEAN, dtype=tensor.dtype).view(-1, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=tensor.dtype).view(-1, 1, 1)
    unit = torch.clamp(tensor.detach().cpu() * std + mean, 0, 1)
    return (unit.numpy().transpose(1, 2, 0) * 255).astype(np.uint8)


def enlarge_box(box, width: int, height: int, margin: float = MARGIN) -> tuple[int, int, int, int] | None:
    """Detection box (x1, y1, x2, y2, floats) → integer crop box, or None if nothing is left.

    Each side moves outwards by ``margin`` times the box width (x) or height (y); the result is
    clipped to [0, width] x [0, height], then each coordinate is truncated with ``int()``.
    Arithmetic is in float64, as in the original with facenet-pytorch 2.6 (its boxes hold
    Python floats).
    """
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    grow_x, grow_y = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = max(0.0, x1 - grow_x), max(0.0, y1 - grow_y)
    right, bottom = min(float(width), x2 + grow_x), min(float(height), y2 + grow_y)
    out = (int(left), int(top), int(right), int(bottom))
    if out[2] <= out[0] or out[3] <= out[1]:
        return None
    return out


@dataclass
class FaceCrop:
    """One image's crop. ``box is None`` ⇔ no usable face was found."""
    tensor: torch.Tensor | None          # [3, 224, 224] float32, ImageNet-normalised (the parser input)
    box: tuple[int, int, int, int] | None  # crop box (x1, y1, x2, y2) in image pixels, after margin/clip/int
    crop: np.ndarray | None              # uint8 [224, 224, 3] RGB, recovered from ``tensor`` as the original saved it
    detection: np.ndarray | None         # the chosen MTCNN box [4] (float64, may extend past the image)
    prob: float | None                   # its detection probability
    faces: int                           # number of faces MTCNN returned
    fallback: bool                       # True when the whole frame was used because no face was found

    def as_tuple(self):
        return self.tensor, self.box, self.crop


class FaceCropper:
    """MTCNN face crops for FaceXFormer, several images per detector call.

    ``crop(images)`` takes a list of uint8 RGB arrays [H, W, 3] (or PIL images) and returns,
    in the same order, one ``(tensor, box, crop)`` per image — ``(None, None, None)`` for an
    image without a face when ``on_no_face="skip"``; with ``"whole_frame"`` such an image gets
    the resized whole frame and ``box`` None. ``crop_detailed`` returns :class:`FaceCrop`
    records with the raw detection as well.

    Images of the same size are detected together, ``detect_batch_size`` per call. Batched and
    one-by-one detection agree to about 1e-5 px (float rounding in the P-net); with
    ``detect_batch_size=1`` the boxes are those of the original, which detected one image at a
    time. Extra keyword arguments go to ``facenet_pytorch.MTCNN`` (the original used none).
    """

    def __init__(self, on_no_face: str = "skip", *, margin: float = MARGIN, size: int = CROP_SIZE,
                 detect_batch_size: int = 8, device: str | torch.device = "cpu", **mtcnn_kwargs):
        if on_no_face not in ON_NO_FACE:
            raise ValueError(f"on_no_face must be one of {ON_NO_FACE}, got {on_no_face!r}")
        if detect_batch_size < 1:
            raise ValueError(f"detect_batch_size must be >= 1, got {detect_batch_size}")
        from facenet_pytorch import MTCNN      # optional dependency: needed only by the face-detector backend
        self.on_no_face = on_no_face
        self.margin = margin
        self.size = size
        self.detect_batch_size = detect_batch_size
        self.mtcnn = MTCNN(keep_all=True, device=device, **mtcnn_kwargs)
        self.transform = crop_transform(size)
        self.counts = {"images": 0, "faces_found": 0, "no_face": 0, "whole_frame": 0, "skipped": 0}

    # -- detection ---------------------------------------------------------------------------

    def detect(self, images) -> list[tuple[np.ndarray | None, np.ndarray | None]]:
        """Per image: (boxes [N, 4] float64, largest first; probs [N]) or (None, None)."""
        arrays = [_as_rgb_array(im, i) for i, im in enumerate(images)]
        result: list = [None] * len(arrays)
        by_shape: dict[tuple, list[int]] = {}
        for i, a in enumerate(arrays):
            by_shape.setdefault(a.shape, []).append(i)
        for idx in by_shape.values():
            for start in range(0, len(idx), self.detect_batch_size):
                chunk = idx[start:start + self.detect_batch_size]
                boxes, probs = self.mtcnn.detect(np.stack([arrays[i] for i in chunk]))
                for j, i in enumerate(chunk):
                    if boxes[j] is None:
                        result[i] = (None, None)
                    else:
                        result[i] = (np.asarray(boxes[j], dtype=np.float64).reshape(-1, 4),
                                     np.asarray(probs[j], dtype=np.float64).reshape(-1))
        return result

    # -- cropping ----------------------------------------------------------------------------

    def crop_detailed(self, images) -> list[FaceCrop | None]:
        """:class:`FaceCrop` per image (``None`` for a skipped image when ``on_no_face="skip"``)."""
        images = list(images)
        detections = self.detect(images)
        out: list[FaceCrop | None] = []
        for i, (im, (boxes, probs)) in enumerate(zip(images, detections)):
            pil = Image.fromarray(_as_rgb_array(im, i))
            self.counts["images"] += 1
            box = enlarge_box(boxes[0], pil.width, pil.height, self.margin) if boxes is not None else None
            if box is not None:
                self.counts["faces_found"] += 1
                tensor = self.transform(pil.crop(box))
                out.append(FaceCrop(tensor, box, denormalize_to_uint8(tensor), boxes[0], float(probs[0]),
                                    len(boxes), False))
                continue
            self.counts["no_face"] += 1
            detection = None if boxes is None else boxes[0]
            faces = 0 if boxes is None else len(boxes)
            if self.on_no_face == "skip":
                self.counts["skipped"] += 1
                out.append(None)
            else:
                self.counts["whole_frame"] += 1
                tensor = self.transform(pil)
                out.append(FaceCrop(tensor, None, denormalize_to_uint8(tensor), detection,
                                    None if boxes is None else float(probs[0]), faces, True))
        return out

    def crop(self, images) -> list[tuple]:
        """Per image ``(tensor [3, 224, 224] or None, crop box or None, crop uint8 [224, 224, 3] or None)``."""
        return [(None, None, None) if fc is None else fc.as_tuple() for fc in self.crop_detailed(images)]


def _as_rgb_array(image, index: int) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"image {index}: expected a uint8 RGB array [H, W, 3], got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a)
