"""One definition of the project's words: property names, parsing class names and palette."""
from __future__ import annotations

import numpy as np

# stage 2's filter properties (the gender / quality / age / glasses CNNs)
FILTER_PROPERTIES = ("gender", "quality", "age", "glass")
# stage 4's seven property scores, in the order of the score CSVs (the original's order)
PROPERTIES = ("eyes", "hair_color", "hair_length", "mouth", "pose", "background_mean", "background_std")
# the three controlled properties (v3 labels, VectorFind's cases)
CONTROLLED = ("eyes", "mouth", "pose")
SCORE_COLUMNS = tuple(f"{p}_score" for p in PROPERTIES)
# the merged property-score CNN of stage 7 (spec 02 §1.1): the seven properties plus hairstyle
MERGED_PROPERTIES = PROPERTIES + ("hairstyle",)

# the 11 face-parsing classes (FaceXFormer's order) and its demo palette (RGB), by class id
CLASS_NAMES = ("background", "skin", "left_eyebrow", "right_eyebrow", "left_eye", "right_eye",
               "nose", "upper_lip", "inner_mouth", "lower_lip", "hair")
PALETTE = np.array([
    (0, 0, 0), (0, 153, 255), (102, 255, 153), (0, 204, 153), (255, 255, 102), (255, 255, 204),
    (255, 153, 0), (255, 102, 255), (102, 0, 51), (255, 204, 255), (255, 0, 102),
], dtype=np.uint8)
PALETTE.setflags(write=False)
