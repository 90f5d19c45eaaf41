"""The case test of spec 02 §5 (02a M16, M20, M21, M24): does a case's direction set really move
eyes, mouth and pose?

One case: its mid vector m (from z, label), its directions (SVM: the group's vectors, the group
read from the unedited image; gradient: the MLPs' gradients at m; mixed: eyes by gradient,
computed first, mouth and pose by SVM), then 50 edited images from an α grid in the loop order
mouth (outer) × eyes × pose (inner). Each image → uint8 → JPEG (OpenCV quality 95, an option)
→ [-1, 1] → scorer; scores rounded to 4 dp; r_p = Pearson(α_p, score_p) per property.
**Pass** iff |r_eyes| ≥ 0.92 and |r_mouth| ≥ 0.88 and |r_pose| ≥ 0.88 on the *unrounded* r
(a constant score gives r = NaN and fails).

α grids per method (chosen for the original generator's w scale; ``scale`` multiplies them):

========  ===============  ===============================  ===============================
method    eyes             mouth                            pose
========  ===============  ===============================  ===============================
svm       −1.2, +1.2       −1.8, −0.9, 0, 0.9, 1.8          −1.8, −1.2, −0.6, 0, 0.6
mixed     as svm
gradient  −1.2, +1.2       −1.6, −0.8, 0, 0.8, 1.6          −1.4, −0.7, 0, 0.7, 1.4
========  ===============  ===============================  ===============================
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch

from stylegan.generator import postprocess

from .directions import DirectionSet, apply
from .gradient import GradientNets
from .groups import Medians, group_names
from .protocols import CONTROLLED, METHODS, MidGenerator, PropertyScorer, check_point, scores_as_dict
from .sampling import uint8_to_scorer

SVM_GRID = {"eyes": (-1.2, 1.2), "mouth": (-1.8, -0.9, 0.0, 0.9, 1.8), "pose": (-1.8, -1.2, -0.6, 0.0, 0.6)}
GRADIENT_GRID = {"eyes": (-1.2, 1.2), "mouth": (-1.6, -0.8, 0.0, 0.8, 1.6), "pose": (-1.4, -0.7, 0.0, 0.7, 1.4)}
ALPHA_GRIDS = {"svm": SVM_GRID, "mixed": SVM_GRID, "gradient": GRADIENT_GRID}
LOOP_ORDER = ("mouth", "eyes", "pose")               # outer -> inner
PASS_THRESHOLDS = {"eyes": 0.92, "mouth": 0.88, "pose": 0.88}
VISUAL_ALPHAS = (-2.0, -0.67, 0.67, 2.0)
SCORE_DECIMALS = 4


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    return method


def alpha_table(method: str, scale: float = 1.0) -> pd.DataFrame:
    """The 50 α rows of one case: ``pm_idx, eyes_pm, mouth_pm, pose_pm`` in the loop order."""
    grid = ALPHA_GRIDS[check_method(method)]
    rows = []
    for m, e, p in itertools.product(grid["mouth"], grid["eyes"], grid["pose"]):
        rows.append({"pm_idx": len(rows), "eyes_pm": e * scale, "mouth_pm": m * scale, "pose_pm": p * scale})
    return pd.DataFrame(rows, columns=["pm_idx", "eyes_pm", "mouth_pm", "pose_pm"])


def pearson(x, y) -> float:
    """np.corrcoef's r (NaN when either side is constant)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def passes(corr: dict, thresholds: dict = PASS_THRESHOLDS) -> bool:
    """The pass rule on unrounded r (NaN fails)."""
    return all(bool(abs(corr[p]) >= thresholds[p]) for p in CONTROLLED)


def pass_gaps(corr: dict, thresholds: dict = PASS_THRESHOLDS) -> dict:
    """How far each |r| is below its threshold (0 when it passes)."""
    return {p: max(thresholds[p] - abs(corr[p]), 0.0) if np.isfinite(corr[p]) else thresholds[p] for p in CONTROLLED}


@dataclass
class CaseResult:
    case: int
    group: str | None
    corr: dict                       # property -> unrounded r
    passed: bool
    table: pd.DataFrame              # the per-case CSV rows (α and rounded scores)
    z: np.ndarray
    label: np.ndarray
    seconds: float = 0.0
    other_scores: dict = field(default_factory=dict)   # every scorer output per image (leak / identity checks)
    images: np.ndarray | None = None                   # uint8 NHWC before JPEG, when kept


@torch.inference_mode()
def measure_mids(generator: MidGenerator, scorer: PropertyScorer, mids: np.ndarray, point: str, *, jpeg: bool = True,
                 batch_size: int = 50, keep_images: bool = False):
    """Scores (name -> float32 [N]) of the images of given mid vectors; and the uint8 images if kept."""
    parts, imgs = [], []
    for s in range(0, len(mids), batch_size):
        u8 = postprocess(generator.image_from_mid(torch.from_numpy(np.ascontiguousarray(mids[s:s + batch_size])), point))
        parts.append(scores_as_dict(scorer(uint8_to_scorer(u8, jpeg)), n=len(u8)))
        if keep_images:
            imgs.append(u8)
    scores = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return scores, (np.concatenate(imgs) if keep_images else None)


def case_group(generator: MidGenerator, scorer: PropertyScorer, mid: np.ndarray, point: str, medians: Medians,
               jpeg: bool = True) -> str:
    """Group of the unedited image of one mid vector [dim]."""
    scores, _ = measure_mids(generator, scorer, np.asarray(mid, np.float32).reshape(1, -1), point, jpeg=jpeg)
    return str(group_names(scores, medians)[0])


def case_directions(method: str, mid: np.ndarray, group: str | None, svm: DirectionSet | None = None,
                    nets: GradientNets | None = None, dropout: bool = False, dropout_seed: int = 0) -> dict:
    """The directions of one case (property -> float64 [dim])."""
    check_method(method)
    if method == "svm":
        return svm.for_group(group, CONTROLLED)
    if method == "gradient":
        return nets.directions(mid, CONTROLLED, dropout, dropout_seed)
    d = nets.directions(mid, ("eyes",), dropout, dropout_seed)          # eyes gradient first (02a M16)
    d.update(svm.for_group(group, ("mouth", "pose")))
    return d


def run_case(generator: MidGenerator, scorer: PropertyScorer, point: str, method: str, case: int, z: np.ndarray,
             label: np.ndarray, *, svm: DirectionSet | None = None, nets: GradientNets | None = None,
             medians: Medians | None = None, group: str | None = None, scale: float = 1.0, jpeg: bool = True,
             dropout: bool = False, batch_size: int = 50, keep_images: bool = False, editor=None) -> CaseResult:
    """One case of the test. ``group`` may be given (saved rows); else it is measured when needed.
    ``editor(mid [dim], alphas {property: [50]}, group, case) -> edited [50, dim]`` replaces the
    edit below (the case's directions, then :func:`apply`); stage 7 passes the editing API's
    (``editing.vectorfind_adapter.case_editor``, equal bit for bit)."""
    t0 = time.perf_counter()
    check_point(point)
    z = np.asarray(z, np.float32).reshape(1, -1)
    label = np.asarray(label, np.float32).reshape(1, -1)
    with torch.inference_mode():
        mid = generator.mid_vectors(torch.from_numpy(z), torch.from_numpy(label), point).cpu().numpy()[0]
    if method == "mixed" and editor is None:                # gradient first, then the group (original order)
        eyes = nets.directions(mid, ("eyes",), dropout, case)["eyes"]
    if method in ("svm", "mixed") and group is None:
        if medians is None:
            raise ValueError("the SVM and mixed tests need medians (or a saved group) to pick the group")
        group = case_group(generator, scorer, mid, point, medians, jpeg)
    table = alpha_table(method, scale)
    alphas = {p: table[f"{p}_pm"].to_numpy() for p in CONTROLLED}
    if editor is not None:
        edited = editor(mid, alphas, group, case)
    else:
        if method == "mixed":
            dirs = {"eyes": eyes, **svm.for_group(group, ("mouth", "pose"))}
        else:
            dirs = case_directions(method, mid, group, svm, nets, dropout, case)
        edited = apply(np.repeat(mid[None], len(table), axis=0), alphas, dirs)
    scores, images = measure_mids(generator, scorer, edited, point, jpeg=jpeg, batch_size=batch_size,
                                  keep_images=keep_images)
    for p in CONTROLLED:
        table[f"{p}_score"] = np.round(scores[p].astype(np.float64), SCORE_DECIMALS)
    corr = {p: pearson(table[f"{p}_pm"], table[f"{p}_score"]) for p in CONTROLLED}
    return CaseResult(case, group, corr, passes(corr), table, z[0], label[0], time.perf_counter() - t0,
                      scores, images)


def run_case_test(generator: MidGenerator, scorer: PropertyScorer, point: str, method: str, z: np.ndarray,
                  label: np.ndarray, *, cases=None, groups=None, stop_at: int | None = None,
                  on_case: Callable[[CaseResult], None] | None = None, **kw) -> list[CaseResult]:
    """Cases in order (numbers ``cases``, default 0…); stops after the case that reaches ``stop_at``
    passes; ``groups`` (one per case) replaces the measured group (QA re-test of saved rows).
    ``on_case`` gets every result as it finishes (e.g. to write its files)."""
    cases = list(range(len(z))) if cases is None else list(cases)
    out, n_pass = [], 0
    for row, i in enumerate(cases):
        res = run_case(generator, scorer, point, method, i, z[row], label[row],
                       group=None if groups is None else groups[row], **kw)
        out.append(res)
        n_pass += res.passed
        if on_case is not None:
            on_case(res)
        if stop_at is not None and n_pass >= stop_at:
            break
    return out


def visual_check_mids(mid: np.ndarray, directions: dict, alphas=VISUAL_ALPHAS) -> tuple[np.ndarray, list]:
    """The visual check's edits: one property at a time, α ∈ {−2, −0.67, 0.67, 2}; returns the
    edited mid vectors [3·len(alphas), dim] and their (property, α) labels."""
    rows, labels = [], []
    for p in CONTROLLED:
        for a in alphas:
            rows.append(apply(np.asarray(mid, np.float32), {p: a}, directions))
            labels.append((p, a))
    return np.stack(rows), labels
