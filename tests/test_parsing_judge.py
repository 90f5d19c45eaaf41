"""Stages 3-4 as a judge (segmentation.parsing_judge): the shipped parser + the 2nd algorithm on generated-style images."""
import numpy as np
import pytest
import torch

from segmentation.parsing_judge import ParsingJudge
from segmentation.property_scores import PROPERTIES as P7
from segmentation.property_scores import scores_v2
from segmentation.synth_segmenter import load_segmenter, parse_crops, whole_frame_crops
from stylegan.sampling import latent_z
from synthface.renderer import render_batch
from synthface.world import WorldMap
from tests.single_thread import one_thread  # noqa: F401

STATS = {f"{p}_score": {"mean": 1.0, "std": 2.0} for p in P7}


def test_parsing_judge_is_stages_3_and_4_on_the_stage_4_scale():
    world = WorldMap(256, seed=0)
    t = world.truth(latent_z(range(48), 256, 77))
    rgb, _ = render_batch(t, 128)
    seg = load_segmenter("synthface/weights/segmenter.pth")
    judge = ParsingJudge(seg, STATS)
    images = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1
    m = judge.measure(images)
    crops = whole_frame_crops(rgb)
    raw = scores_v2(parse_crops(seg, crops), crops, with_hairstyle=False).values
    for p in P7:
        assert np.allclose(m[p], (raw[p] - 1.0) / 2.0)
    for p, col in (("eyes", "eyes_open"), ("mouth", "mouth_open"), ("pose", "pose"), ("hair_color", "hair_color")):
        assert np.corrcoef(m[p], t[col])[0, 1] > 0.8, p


def test_parsing_judge_needs_every_scale():
    seg = load_segmenter("synthface/weights/segmenter.pth")
    with pytest.raises(ValueError, match="eyes"):
        ParsingJudge(seg, {k: v for k, v in STATS.items() if k != "eyes_score"})
