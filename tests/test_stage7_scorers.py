"""The judges as VectorFind property scorers (evaluation/scorers.py)."""
import numpy as np
import pytest
import torch

from evaluation.scorers import JudgeScorer, identity_stats, parsing_scorer, property_cnn_scorer
from pipeline.profiles import load_profile
from pipeline.vocabulary import PROPERTIES
from segmentation.synth_segmenter import load_segmenter
from synthface.renderer import render_batch
from synthface.truth import world
from vectorfind.protocols import scores_as_dict


class FakeJudge:
    name = "fake"

    def __init__(self, names, value):
        self.names, self.value = names, value

    def measure(self, images):
        return {p: np.full(len(images), self.value + i, np.float64) for i, p in enumerate(self.names)}


class SevenOutputs(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))[:, :1].repeat(1, 7) + torch.arange(7.0)


def test_missing_hairstyle_comes_from_the_second_judge():
    s = JudgeScorer(FakeJudge(PROPERTIES, 0.0), hairstyle_from=FakeJudge(("hairstyle",), 5.0))
    out = scores_as_dict(s(torch.zeros(3, 3, 8, 8)), n=3)
    assert out["hairstyle"].tolist() == [5.0] * 3 and out["mouth"].dtype == np.float32
    with pytest.raises(ValueError, match="hairstyle"):
        JudgeScorer(FakeJudge(PROPERTIES, 0.0))(torch.zeros(1, 3, 8, 8))


def test_property_cnn_scorer_eval_seeded_and_unseeded_dropout():
    model = torch.nn.Sequential(SevenOutputs(), torch.nn.Dropout(0.5)).eval()
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    hs = FakeJudge(("hairstyle",), 1.0)
    a, b = property_cnn_scorer(model, hs)(x), property_cnn_scorer(model, hs)(x)
    np.testing.assert_array_equal(a["eyes"], b["eyes"])                         # eval mode: no dropout
    d1 = property_cnn_scorer(model, hs, dropout=True, dropout_seed=3)(x)
    d2 = property_cnn_scorer(model, hs, dropout=True, dropout_seed=3)(x)
    np.testing.assert_array_equal(d1["pose"], d2["pose"])                        # seeded dropout repeats
    assert not np.array_equal(d1["pose"], a["pose"])
    u = property_cnn_scorer(model, hs, dropout=True, dropout_seed=None)(x)      # the original's: unseeded
    assert set(u) >= set(PROPERTIES) | {"hairstyle"} and not model.training


def test_parsing_scorer_measures_hairstyle_on_renders():
    prof = load_profile("synthface")
    w = world(int(prof["generator"]["z_dim"]), int(prof["world_seed"]))
    rgb, _ = render_batch(w.truth(np.random.default_rng(0).standard_normal((2, w.z_dim)).astype(np.float32)), 128)
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1
    s = parsing_scorer(load_segmenter(prof.path(prof["segmentation"]["checkpoint"])), identity_stats())
    out = scores_as_dict(s(x), n=2)
    assert set(out) >= set(PROPERTIES) | {"hairstyle"} and all(np.isfinite(v).all() for v in out.values())


class CountingJudge(FakeJudge):
    def __init__(self, names, value):
        super().__init__(names, value)
        self.calls = 0

    def measure(self, images):
        self.calls += 1
        return super().measure(images)


def test_a_judge_measures_a_batch_once_in_the_stage_scorer():
    """The property CNN's hairstyle comes from the evaluator, which is also a test judge: one
    measurement of each batch serves both (the evaluator used to measure every batch twice)."""
    from stages.vectorfind import MultiScorer
    ev = CountingJudge((*PROPERTIES, "hairstyle"), 3.0)
    cnn = CountingJudge(PROPERTIES, 0.0)
    multi = MultiScorer({"property_cnn": JudgeScorer(cnn, hairstyle_from=ev), "evaluator": JudgeScorer(ev)},
                        "property_cnn")
    out = multi(torch.zeros(2, 3, 8, 8))
    assert (cnn.calls, ev.calls) == (1, 1)
    assert out["hairstyle"].tolist() == out["evaluator/hairstyle"].tolist() == [10.0, 10.0]
    multi(torch.zeros(2, 3, 8, 8))
    assert (cnn.calls, ev.calls) == (2, 2)                   # a new batch is measured again
