"""The three direction-finding options of VectorFind-v9 from sampling to directions (spec 02 §3–§4.4).

* ``svm``: one sampling at ``point``; 16 groups × 3 properties LinearSVC directions.
* ``gradient``: one sampling shared by the three MLPs (02a M17); directions per case.
* ``mixed`` (the original's final choice, at mapping_split1): eyes by the gradient method,
  mouth and pose by SVM. The original sampled n three times (eyes NN, mouth SVMs, pose SVMs;
  ``separate_sampling=True``, seeded streams 0, 1, 2); one shared sampling is the cheaper
  default here.

``quality`` holds what the aggregate log reports: SVM accuracy per property, NN test MSE per
property, or for mixed the eyes NN MSE and the mouth / pose SVM accuracies.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from .cases import check_method
from .directions import DirectionSet
from .gradient import GradientNets, train_gradient_nets
from .groups import DEFAULT_RATIO, Medians
from .protocols import CONTROLLED, MidGenerator, PropertyScorer, check_point
from .sampling import SAMPLE_STREAM, Samples, sample
from .svm import SvmResult, fit_svm_from_samples


@dataclass
class FoundDirections:
    method: str
    point: str
    n: int
    svm: DirectionSet | None
    nets: GradientNets | None
    quality: dict                                   # property -> SVM accuracy or NN test MSE
    seconds: dict = field(default_factory=dict)     # sampling / svm / gradient seconds
    svm_results: list = field(default_factory=list)
    samples: list = field(default_factory=list)     # the Samples used (for group statistics, reports)


def _merge_svm(point: str, results: list[SvmResult]) -> DirectionSet:
    ds = DirectionSet(point)
    for r in results:
        ds.vectors.update(r.directions.vectors)
    return ds


def find_directions(method: str, generator: MidGenerator, scorer: PropertyScorer, point: str, n: int,
                    medians: Medians, *, ratio: float = DEFAULT_RATIO, seed: int | None = 0,
                    rng_order: str = "seeded", separate_sampling: bool = False, batch_size: int = 50,
                    gradient_kw: dict | None = None, progress=None) -> FoundDirections:
    """Sample, then fit the directions of ``method`` at ``point``."""
    check_method(method)
    check_point(point)
    gradient_kw = dict(gradient_kw or {})
    seconds = {"sampling": 0.0, "svm": 0.0, "gradient": 0.0}

    def draw(stream_offset: int) -> Samples:
        t = time.perf_counter()
        s = sample(generator, scorer, point, n, seed=seed, rng_order=rng_order, batch_size=batch_size,
                   stream=SAMPLE_STREAM + stream_offset, progress=progress)
        seconds["sampling"] += time.perf_counter() - t
        return s

    def svm_fit(s: Samples, props) -> SvmResult:
        t = time.perf_counter()
        r = fit_svm_from_samples(s, medians, properties=props, ratio=ratio, seed=seed, rng_order=rng_order)
        seconds["svm"] += time.perf_counter() - t
        return r

    def nn_fit(s: Samples, props) -> GradientNets:
        t = time.perf_counter()
        g = train_gradient_nets(s, point, props, seed=seed, rng_order=rng_order, **gradient_kw)
        seconds["gradient"] += time.perf_counter() - t
        return g

    if method == "svm":
        s = draw(0)
        r = svm_fit(s, CONTROLLED)
        return FoundDirections(method, point, len(s), r.directions, None, dict(r.accuracy), seconds, [r], [s])
    if method == "gradient":
        s = draw(0)
        g = nn_fit(s, CONTROLLED)
        return FoundDirections(method, point, len(s), None, g, dict(g.test_mse), seconds, [], [s])
    # mixed
    if separate_sampling:
        s_eyes, s_mouth, s_pose = draw(0), draw(1), draw(2)
        g = nn_fit(s_eyes, ("eyes",))
        r_m, r_p = svm_fit(s_mouth, ("mouth",)), svm_fit(s_pose, ("pose",))
        results, used = [r_m, r_p], [s_eyes, s_mouth, s_pose]
    else:
        s = draw(0)
        g = nn_fit(s, ("eyes",))
        results, used = [svm_fit(s, ("mouth", "pose"))], [s]
    quality = {"eyes": g.test_mse["eyes"]}
    for r in results:
        quality.update({p: r.accuracy[p] for p in r.accuracy})
    return FoundDirections(method, point, len(used[0]), _merge_svm(point, results), g, quality, seconds, results,
                           used)
