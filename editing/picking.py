"""Scored samples and the choice of an unsupervised component per property.

SeFa and GANSpace find directions without data; which one edits eyes, mouth or pose is then
decided on a small scored sample: the component whose coordinate (projection of the sample's
w, centred) correlates most strongly with the property wins, its sign set so that +α raises the
property. Properties take distinct components (greedy, strongest |r| first).

Samples needed: the picks are recomputed on the first 8, 16, 32, … samples; the number
reported is the smallest prefix from which every larger prefix gives the same picks and signs
as the whole sample.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from vectorfind.protocols import CONTROLLED, scores_as_dict
from vectorfind.sampling import SAMPLE_STREAM, draw_latents

from .edit import mid_of, synthesize, w_of

FIRST_PREFIX = 8


@dataclass
class ScoredSample:
    z: np.ndarray
    label: np.ndarray
    w: np.ndarray                 # float32 [n, w_dim]
    scores: dict                  # property -> float32 [n]
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.w)


def as_scores(out, n: int) -> dict:
    """A scorer's output as property -> float32 [n] (a mapping with any keys, or the merged CNN's array)."""
    if isinstance(out, dict):
        d = {k: np.asarray(torch.as_tensor(v).detach().cpu(), dtype=np.float32).reshape(-1) for k, v in out.items()}
        bad = {k: len(v) for k, v in d.items() if len(v) != n}
        if bad:
            raise ValueError(f"scorer returned {bad} scores for {n} images")
        return d
    return scores_as_dict(out, n)


def label_dim(g) -> int:
    return g.spec.label_dim if hasattr(g, "spec") else 0


@torch.inference_mode()
def draw_sample(g, scorer, n: int, *, seed: int = 0, stream: int = SAMPLE_STREAM, batch_size: int = 50,
                score: bool = True) -> ScoredSample:
    """n seeded (z, label) of vectorfind's sampling, their w, and (``score``) the scorer's scores of
    the images (ψ = 1, stored noise)."""
    t = time.perf_counter()
    z, label = draw_latents(n, g.cfg.z_dim, label_dim(g), seed, "seeded", stream)
    ws, parts = [], []
    for a in range(0, n, batch_size):
        zt, lt = torch.from_numpy(z[a:a + batch_size]), torch.from_numpy(label[a:a + batch_size])
        w = w_of(g, mid_of(g, zt, lt if label_dim(g) else None, "w"), "w")
        ws.append(w.numpy().astype(np.float32))
        if score:
            parts.append(as_scores(scorer(synthesize(g, g.truncation(w))), len(zt)))
    scores = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    return ScoredSample(z, label, np.concatenate(ws), scores, time.perf_counter() - t,
                        {"seed": seed, "stream": stream, "n": n})


def correlations(coords: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Pearson r of each column of ``coords`` [n, K] with ``values`` [n] (0 where undefined)."""
    x = coords - coords.mean(axis=0)
    y = values - values.mean()
    den = np.sqrt((x ** 2).sum(axis=0) * (y ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y[:, None]).sum(axis=0) / den
    return np.nan_to_num(r)


def _pick(coords, scores, props):
    r = np.stack([correlations(coords, np.asarray(scores[p], np.float64)) for p in props])   # [P, K]
    out, taken = {}, set()
    order = np.dstack(np.unravel_index(np.argsort(-np.abs(r), axis=None), r.shape))[0]
    for pi, k in order:
        p = props[pi]
        if p in out or int(k) in taken:
            continue
        out[p] = (int(k), 1.0 if r[pi, k] >= 0 else -1.0, float(r[pi, k]))
        taken.add(int(k))
        if len(out) == len(props):
            break
    return out


def pick_components(coords: np.ndarray, scores: dict, properties=CONTROLLED) -> tuple[dict, int, list]:
    """Per property (component index, sign, r) on the whole sample, the samples needed (module
    docstring) and the prefix history [(n, picks)]."""
    coords = np.asarray(coords, np.float64)
    props = tuple(properties)
    if len(props) > coords.shape[1]:
        raise ValueError(f"{len(props)} properties need at least as many components, got {coords.shape[1]}")
    n = len(coords)
    prefixes, k = [], FIRST_PREFIX
    while k < n:
        prefixes.append(k)
        k *= 2
    prefixes.append(n)
    history = [(m, _pick(coords[:m], {p: scores[p][:m] for p in props}, props)) for m in prefixes]
    final = {p: v[:2] for p, v in history[-1][1].items()}
    needed = n
    for m, picks in reversed(history):
        if {p: v[:2] for p, v in picks.items()} != final:
            break
        needed = m
    return history[-1][1], needed, history
