"""The generation test of conditional generators (spec 04 §5.5, §7): vary the label, measure the image.

For each of ``n_z`` latents and each label of a factorial grid over the controlled
properties (eyes, mouth, pose; default grid below: 2 x 5 x 5 = 50 labels, the other labels
0), one image is rendered; one or more *judges* measure every image; per latent and
property the Pearson r, MSE and MAE between intended and measured values decide a pass:

============  ====================================  ==========  ===========
property      grid values (default)                 min r       max MAE
============  ====================================  ==========  ===========
eyes          -1.8, +1.8                            0.77        1.0
mouth         -1.2, -0.6, 0, 0.8, 1.6               0.85        0.6
pose          -1.2, 0, 1.2, 2.4, 3.6                0.82        1.4
============  ====================================  ==========  ===========

Label order: mouth outer, eyes middle, pose inner (label index = 10·m + 5·e + p), as the
original. A latent passes when all six thresholds hold (for the *primary* judge, the first
one; the others get the same numbers, which are only comparable to the thresholds when
they measure in label units — see :class:`EvaluatorJudge`'s ``calibration``).

Everything is a parameter (:class:`GenerationTestSettings`): grid, order, thresholds, the
number of latents and their seed (each z from its own stream, as stage 1's
:func:`stylegan.sampling.latent_z`) — or explicit latents (v3: from the encoder's posterior).
Rendering is batched, the judges run in eval mode under ``inference_mode``.

Beyond the original's r / MAE the test reports, per latent:

* leaks: |r| between each controlled label and each *other* controlled property's
  measured value, and hair colour, hair length and background mean (``leak_{label}_to_{measured}``);
* identity stability: for hair colour, hair length, background mean, age (``old``) and
  ``glasses`` (those the judge measures), the std over the latent's images relative to the
  std over latents of the per-latent means (``{a}_stability``, small = identity kept).

A Pearson r whose inputs do not vary is reported as 0.

Files (``out_dir``, written atomically; ``metrics.json`` last): ``z.csv``, ``scores.csv``
(every image's label and measured values), ``result_each_z.csv``, ``metrics.json``,
``report.md`` with ``best_z_grid.png`` (rows eyes / mouth / pose, columns the grid values,
the other two properties at their reference value), ``best_z_all_labels.png``,
``best_z_scatter.png`` and, when ``epoch`` is given, ``r_per_epoch.png`` from the history
CSV that every epoch's call updates (default ``out_dir/../generation_test_history.csv``).
"""
from __future__ import annotations

import itertools
import math
import time
import dataclasses
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pipeline.io import atomic_write_csv, atomic_write_json, atomic_write_png
from pipeline.vocabulary import CONTROLLED
from stylegan.generator import postprocess
from stylegan.sampling import DEFAULT_PLAN, FAST, inference_plan, latent_z
from stylegan_modified.conditional import batch_ranges

from .generation_report import write_test_report
from .judges import Judge, Renderer

DEFAULT_GRID = {"eyes": (-1.8, 1.8), "mouth": (-1.2, -0.6, 0.0, 0.8, 1.6), "pose": (-1.2, 0.0, 1.2, 2.4, 3.6)}
LOOP_ORDER = ("mouth", "eyes", "pose")          # outer -> inner
DEFAULT_MIN_R = {"eyes": 0.77, "mouth": 0.85, "pose": 0.82}
DEFAULT_MAX_MAE = {"eyes": 1.0, "mouth": 0.6, "pose": 1.4}
LEAK_TARGETS = ("hair_color", "hair_length", "background_mean")
IDENTITY_ATTRIBUTES = ("hair_color", "hair_length", "background_mean", "old", "glasses")
# the StyleGAN inference plan of the test's renders: "exact" = DEFAULT_PLAN (bit-identical to the plain
# path), "relaxed" = FAST (within one grey level, about 1.8x faster at 128 px; batch-size independent)
INFERENCE_PATHS = {"exact": DEFAULT_PLAN, "relaxed": FAST}


# ------------------------------------------------------------------------------------ settings, grid

@dataclass
class GenerationTestSettings:
    n_z: int = 30
    z_seed: int = 0
    grid: dict = field(default_factory=lambda: dict(DEFAULT_GRID))
    loop_order: tuple = LOOP_ORDER
    min_r: dict = field(default_factory=lambda: dict(DEFAULT_MIN_R))
    max_mae: dict = field(default_factory=lambda: dict(DEFAULT_MAX_MAE))
    label_fill: dict = field(default_factory=dict)      # labels outside the grid (default 0)
    batch_size: int = 25
    round_decimals: int | None = 4                       # measured values rounded before the statistics (original)
    save_images: bool = False                            # every image as PNG under images/z{j}/{k}.png
    figure_reference: dict | None = None                 # fixed values of the other properties in best_z_grid.png
    inference_path: str = "exact"                        # StyleGAN renderers: "exact" (plain bytes) or "relaxed"

    def validate(self) -> None:
        if set(self.grid) != set(CONTROLLED) or sorted(self.loop_order) != sorted(CONTROLLED):
            raise ValueError(f"grid and loop_order must cover exactly {CONTROLLED}; got {sorted(self.grid)} / "
                             f"{list(self.loop_order)}")
        for p in CONTROLLED:
            if len(self.grid[p]) < 1 or p not in self.min_r or p not in self.max_mae:
                raise ValueError(f"{p}: needs grid values, min_r and max_mae")
        if int(self.n_z) < 1 or int(self.batch_size) < 1:
            raise ValueError(f"n_z and batch_size must be >= 1, got {self.n_z}, {self.batch_size}")
        if self.inference_path not in INFERENCE_PATHS:
            raise ValueError(f"inference_path must be one of {', '.join(INFERENCE_PATHS)}, got {self.inference_path!r}")

    def reference(self) -> dict:
        """Per property, the grid value shown while another property varies (nearest 0, ties: larger)."""
        ref = dict(self.figure_reference or {})
        for p in CONTROLLED:
            ref.setdefault(p, min(self.grid[p], key=lambda v: (abs(v), -v)))
        return ref

    def to_dict(self) -> dict:
        d = asdict(self)
        d["grid"] = {k: list(map(float, v)) for k, v in self.grid.items()}
        d["loop_order"] = list(self.loop_order)
        return d


def label_grid(s: GenerationTestSettings) -> np.ndarray:
    """[n_labels, 3] float32: the grid values in :data:`CONTROLLED` column order, in ``loop_order``."""
    rows = []
    for combo in itertools.product(*(s.grid[p] for p in s.loop_order)):
        v = dict(zip(s.loop_order, combo))
        rows.append([v[p] for p in CONTROLLED])
    return np.asarray(rows, dtype=np.float32)


def label_vectors(grid3: np.ndarray, label_names: Sequence[str], fill: dict | None = None) -> np.ndarray:
    """Full labels [n, L] (float32) for a model whose label columns are ``label_names``."""
    names = list(label_names)
    missing = [p for p in CONTROLLED if p not in names]
    if missing:
        raise ValueError(f"the generator's labels {names} lack the controlled properties {missing}")
    unknown = set(fill or {}) - set(names)
    if unknown:
        raise ValueError(f"label_fill names labels the generator does not have: {sorted(unknown)}")
    out = np.zeros((len(grid3), len(names)), dtype=np.float32)
    for k, v in (fill or {}).items():
        out[:, names.index(k)] = v
    for i, p in enumerate(CONTROLLED):
        out[:, names.index(p)] = grid3[:, i]
    return out


# ------------------------------------------------------------------------------------ statistics

def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of the vector ``x`` [n] with each row of ``y`` [m, n]; 0 where either does not vary."""
    xc = x - x.mean()
    yc = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((xc ** 2).sum() * (yc ** 2).sum(axis=1))
    num = yc @ xc
    return np.divide(num, den, out=np.zeros_like(num), where=den > 1e-12)


def per_z_table(measured: dict, grid3: np.ndarray, s: GenerationTestSettings, judge: str) -> pd.DataFrame:
    """One row per latent: r / MSE / MAE per controlled property, pass, leaks, identity stability."""
    for p in CONTROLLED:
        if p not in measured:
            raise ValueError(f"judge {judge!r} does not measure {p!r} (it gives {sorted(measured)})")
    n_z = next(iter(measured.values())).shape[0]
    cols: dict = {"z_idx": np.arange(n_z)}
    stats = {}
    for i, p in enumerate(CONTROLLED):
        y, x = measured[p], grid3[:, i].astype(np.float64)
        stats[p] = (pearson_rows(x, y), ((y - x) ** 2).mean(axis=1), np.abs(y - x).mean(axis=1))
    cols["passed"] = np.logical_and.reduce([(stats[p][0] >= s.min_r[p]) & (stats[p][2] <= s.max_mae[p])
                                            for p in CONTROLLED])
    for k, stat in enumerate(("corr", "mse", "mae")):
        for p in CONTROLLED:
            cols[f"{p}_{stat}"] = stats[p][k]
    for i, lp in enumerate(CONTROLLED):
        for mp in [q for q in CONTROLLED if q != lp] + list(LEAK_TARGETS):
            if mp in measured:
                cols[f"leak_{lp}_to_{mp}"] = np.abs(pearson_rows(grid3[:, i].astype(np.float64), measured[mp]))
    for a in IDENTITY_ATTRIBUTES:
        if a in measured:
            within = measured[a].std(axis=1)
            across = measured[a].mean(axis=1).std() if n_z > 1 else math.nan
            cols[f"{a}_within_std"] = within
            cols[f"{a}_stability"] = within / across if across > 0 else np.full(n_z, math.nan)
    return pd.DataFrame(cols)


def summarise(table: pd.DataFrame) -> dict:
    """Passes, mean and best (max r, min MSE / MAE) per property, mean leaks and stabilities."""
    out = {"passes": int(table["passed"].sum()), "passed_z": [int(j) for j in table.loc[table["passed"], "z_idx"]],
           "mean": {}, "best": {}}
    for p in CONTROLLED:
        for stat in ("corr", "mse", "mae"):
            c = f"{p}_{stat}"
            out["mean"][c] = float(table[c].mean())
            out["best"][c] = float(table[c].max() if stat == "corr" else table[c].min())
    out["leak_mean_abs_r"] = {c[5:]: float(table[c].mean()) for c in table if c.startswith("leak_")}
    out["identity_mean_stability"] = {c[:-10]: _num(table[c].mean()) for c in table if c.endswith("_stability")}
    out["identity_mean_within_std"] = {c[:-11]: float(table[c].mean()) for c in table if c.endswith("_within_std")}
    return out


def best_z_index(table: pd.DataFrame) -> int:
    """Passing latents first, then the highest mean r over the controlled properties."""
    mean_r = table[[f"{p}_corr" for p in CONTROLLED]].mean(axis=1).to_numpy()
    order = sorted(range(len(table)), key=lambda j: (not bool(table["passed"].iat[j]), -mean_r[j], j))
    return int(order[0])


def _num(v):
    v = float(v)
    return None if math.isnan(v) else v


# ------------------------------------------------------------------------------------ the test

def run_generation_test(generator: Renderer, judges: Sequence[Judge], out_dir: str | Path,
                        settings: GenerationTestSettings | None = None, *, z=None, epoch: int | None = None,
                        history_path: str | Path | None = None, title: str = "Generation test",
                        progress: bool = True) -> dict:
    """Run the test and write its files (module docstring); returns the metrics dict.

    ``generator``: a :class:`~stylegan_modified.conditional.ConditionalGenerator` or anything
    with ``render(z, label)``, ``label_names`` and ``z_dim`` (see :class:`GeneratorAdapter`).
    ``judges``: the first is primary (pass / best latent). ``z``: explicit latents
    [n_z, z_dim] instead of the seeded ones (``settings.n_z`` is then ignored)."""
    s = settings or GenerationTestSettings()
    s.validate()
    judges = list(judges)
    if not judges or len({j.name for j in judges}) != len(judges):
        raise ValueError(f"need at least one judge, with distinct names; got {[j.name for j in judges]}")
    out_dir = Path(out_dir)
    (out_dir / "metrics.json").unlink(missing_ok=True)        # the completion marker is written last
    grid3 = label_grid(s)
    labels = label_vectors(grid3, generator.label_names, s.label_fill)
    if z is None:
        z = latent_z(range(int(s.n_z)), int(generator.z_dim), int(s.z_seed))
        z_source = f"seeded N(0, I): stylegan.sampling.latent_z(range({s.n_z}), {generator.z_dim}, {s.z_seed})"
    else:
        z = np.asarray(torch.as_tensor(z).detach().cpu(), dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != generator.z_dim:
            raise ValueError(f"z must have shape [n_z, {generator.z_dim}], got {z.shape}")
        z_source = "given"
    n_z, n_l = len(z), len(labels)
    zi, li = np.repeat(np.arange(n_z), n_l), np.tile(np.arange(n_l), n_z)
    raw = {j.name: {} for j in judges}
    t0 = time.perf_counter()
    with render_plan(generator, s.inference_path):
        for a, b in tqdm(batch_ranges(n_z * n_l, s.batch_size), desc="generation test", disable=not progress):
            with torch.inference_mode():                 # rendering and measuring build no autograd graph
                images = generator.render(torch.from_numpy(z[zi[a:b]]), torch.from_numpy(labels[li[a:b]]))
                for j in judges:
                    for k, v in j.measure(images).items():
                        raw[j.name].setdefault(k, []).append(np.asarray(v, dtype=np.float64).reshape(-1))
            if s.save_images:
                for img, zz, ll in zip(postprocess(images), zi[a:b], li[a:b]):
                    atomic_write_png(out_dir / "images" / f"z{zz:03d}" / f"{ll:03d}.png", img)
    seconds = time.perf_counter() - t0
    measured = {}
    for name, d in raw.items():
        measured[name] = {}
        for k, parts in d.items():
            v = np.concatenate(parts).reshape(n_z, n_l)
            measured[name][k] = np.round(v, s.round_decimals) if s.round_decimals is not None else v
    tables = {j.name: per_z_table(measured[j.name], grid3, s, j.name) for j in judges}
    primary = judges[0].name
    best = best_z_index(tables[primary])

    _write_tables(out_dir, z, grid3, zi, li, measured, tables, primary)
    metrics = {
        "title": title, "epoch": epoch, "settings": s.to_dict(), "label_names": list(generator.label_names),
        "z_source": z_source, "n_z": n_z, "n_labels": n_l, "n_images": n_z * n_l,
        "primary_judge": primary, "judge_info": {j.name: getattr(j, "describe", dict)() for j in judges},
        "judges": {name: summarise(t) for name, t in tables.items()},
        "best_z": best, "best_z_result": {name: _row(t, best) for name, t in tables.items()},
        "seconds": round(seconds, 3), "images_per_second": round(n_z * n_l / max(seconds, 1e-9), 2),
    }
    metrics["passes"] = metrics["judges"][primary]["passes"]
    history = None
    if epoch is not None:
        history_path = Path(history_path) if history_path else out_dir.parent / "generation_test_history.csv"
        history = _update_history(history_path, epoch, metrics)
        metrics["history_file"] = str(history_path)
    write_test_report(out_dir, generator, z[best], labels, grid3, s, metrics, tables, measured, primary, history, title)
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics


@contextmanager
def render_plan(generator, path: str):
    """While the test renders: a StyleGAN renderer (one with a ``synthesis`` network) takes the plan of
    ``path`` for calls without one (:func:`stylegan.sampling.inference_plan`: its previous default comes
    back afterwards; training is untouched). Other renderers (the oracle, adapters) render as they do."""
    if not hasattr(getattr(generator, "synthesis", None), "default_plan"):
        yield
        return
    with inference_plan(generator, INFERENCE_PATHS[path]):
        yield


def _row(table: pd.DataFrame, j: int) -> dict:
    return {k: (_num(v) if isinstance(v, (float, np.floating)) else v.item() if hasattr(v, "item") else v)
            for k, v in table.iloc[j].to_dict().items()}


def _write_tables(out_dir, z, grid3, zi, li, measured, tables, primary) -> None:
    zdf = pd.DataFrame(z, columns=[f"z_{i}" for i in range(z.shape[1])])
    zdf.insert(0, "z_idx", np.arange(len(z)))
    atomic_write_csv(out_dir / "z.csv", zdf)
    scores = {"z_idx": zi, "label_idx": li}
    for i, p in enumerate(CONTROLLED):
        scores[f"{p}_label"] = grid3[li, i]
    for name, d in measured.items():
        for k, v in d.items():
            scores[f"{name}_{k}"] = v.reshape(-1)
    atomic_write_csv(out_dir / "scores.csv", pd.DataFrame(scores))
    joined = tables[primary].copy()
    for name, t in tables.items():
        if name != primary:
            joined = joined.join(t.drop(columns=["z_idx"]).add_prefix(f"{name}_"))
    atomic_write_csv(out_dir / "result_each_z.csv", joined)


def _update_history(path: Path, epoch: int, metrics: dict) -> pd.DataFrame:
    rows = []
    for name, summ in metrics["judges"].items():
        row = {"epoch": int(epoch), "judge": name, "passes": summ["passes"]}
        for p in CONTROLLED:
            for stat in ("corr", "mae"):
                row[f"{p}_{stat}_mean"] = summ["mean"][f"{p}_{stat}"]
                row[f"{p}_{stat}_best"] = summ["best"][f"{p}_{stat}"]
        rows.append(row)
    old = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=list(rows[0]))
    old = old[old["epoch"] != int(epoch)]
    hist = pd.concat([old, pd.DataFrame(rows)], ignore_index=True) if len(old) else pd.DataFrame(rows)
    hist = hist.sort_values(["epoch", "judge"], kind="stable").reset_index(drop=True)
    atomic_write_csv(path, hist)
    return hist


def settings_from(cfg: dict) -> GenerationTestSettings:
    """A :class:`GenerationTestSettings` from a ``stage5.generation_test`` dict."""
    fields = {f.name for f in dataclasses.fields(GenerationTestSettings)}
    kw = {k: (tuple(v) if k == "loop_order" else v) for k, v in cfg.items() if k in fields}
    if "grid" in kw:
        kw["grid"] = {k: tuple(v) for k, v in kw["grid"].items()}
    return GenerationTestSettings(**kw)
