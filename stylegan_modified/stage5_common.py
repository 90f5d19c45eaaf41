"""Pieces shared by the stage-5 training scripts (FineTune-v1 / v4, FineTune-v3, final generation).

* starting models: :func:`base_generator_state` / :func:`base_discriminator_state` (the
  profile's unconditional checkpoint), :func:`build_configs`;
* the judges of the generation test (:func:`make_judges`: the property CNN in eval mode —
  primary — and, on synthface, the independent evaluator with an affine calibration to label
  units fitted on the kept set, :func:`evaluator_calibration`);
* :func:`female_share` (300 seeded random outputs, gender CNN and evaluator),
  :func:`grid_figure` (the v1 monitoring grid: 7 fixed labels x 10 z);
* resumable training state files (:func:`save_state`, :func:`load_state`), the
  "finished" bookkeeping, and :func:`settings_key`.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from cnn.property_score_cnn import P3, P7
from pipeline.io import atomic_write_csv
from pipeline.checkpoint import CheckpointError, read_checkpoint, save_checkpoint, select_entry
from stylegan.discriminator import DiscriminatorConfig
from stylegan.generator import GeneratorConfig, postprocess
from stylegan.sampling import latent_z

from .conditional import batch_ranges, synthesize
from .generation_test import EvaluatorJudge, GenerationTestSettings, PropertyCNNJudge, mosaic_figure

# the original's 7 monitoring labels (spec 04 §2.4), P7 order; one property changes per row
MONITOR_LABELS = np.array([
    [1.5, 1.5, 1.1, -1.1, -1.2, 1.2, -1.0],
    [-1.5, 1.5, 1.1, -1.1, -1.2, 1.2, -1.0],
    [-1.5, -1.5, 1.1, -1.1, -1.2, 1.2, -1.0],
    [-1.5, -1.5, -2.0, -1.1, -1.2, 1.2, -1.0],
    [-1.5, -1.5, -2.0, 1.8, -1.2, 1.2, -1.0],
    [-1.5, -1.5, -2.0, 1.8, 2.0, 1.2, -1.0],
    [-1.5, -1.5, -2.0, 1.8, 2.0, -1.6, -1.0],
], dtype=np.float32)
MONITOR_CHANGED = ("start", "eyes", "hair_color", "hair_length", "mouth", "pose", "background_mean")


def build_configs(profile) -> tuple[GeneratorConfig, DiscriminatorConfig]:
    return GeneratorConfig.from_dict(profile["generator"]), DiscriminatorConfig.from_dict(profile["discriminator"])


def base_generator_state(profile) -> tuple[dict, str]:
    """The profile's unconditional generator state dict and where it came from."""
    path = profile.path(profile.get("generator_checkpoint"))
    if path is None:
        raise CheckpointError(f"profile {profile.name!r} names no generator checkpoint to fine-tune")
    ckpt = read_checkpoint(path, missing_hint=profile.get("checkpoint_hint", ""))
    key = profile.get("generator_checkpoint_key", "generator")
    return select_entry(ckpt, key, path), f"{path} [{key}]"


def base_discriminator_state(profile) -> tuple[dict, str]:
    """The base discriminator: ``stage5.discriminator_checkpoint`` (key 'discriminator') when it
    exists, else the 'discriminator' entry of the generator checkpoint (GenForce files, the
    interim synthface file)."""
    s5 = profile.get("stage5", {})
    candidates = [profile.path(s5["discriminator_checkpoint"])] if s5.get("discriminator_checkpoint") else []
    candidates.append(profile.path(profile.get("generator_checkpoint")))
    tried = []
    for path in candidates:
        if path is None or not path.is_file():
            tried.append(f"{path} (missing)")
            continue
        ckpt = read_checkpoint(path)
        if "discriminator" in ckpt:
            return ckpt["discriminator"], f"{path} [discriminator]"
        tried.append(f"{path} (no 'discriminator' entry)")
    raise CheckpointError(f"profile {profile.name!r}: no base discriminator found; tried {', '.join(tried)}. "
                          + profile.get("checkpoint_hint", ""))


def shipped_settings(profile, key: dict, s, img_nos) -> dict:
    """The settings a shipped run must share with this run: the state key with paths inside the data
    root made relative, the epochs (a shipped run cannot be continued) and the kept image numbers."""
    from pipeline.shipped import ids_digest, portable_key
    return {**portable_key(key, profile.data_root), "epochs": int(s.epochs), "img_nos_sha256": ids_digest(img_nos)}


def shipped_bases(profile, models: dict) -> dict:
    """file name -> (base state dict, base file) for ``models`` (file name -> 'generator' / 'discriminator')."""
    out = {}
    for name, kind in models.items():
        state, src = base_generator_state(profile) if kind == "generator" else base_discriminator_state(profile)
        out[name] = (state, Path(src.rsplit(" [", 1)[0]))
    return out


def pack_training_run(profile, run: Path, dest: Path | None, stage: str, settings_cls, label_names,
                      record_keys, models: dict, copy_patterns) -> dict:
    """Pack a finished v1 / v4 / v3 run (its ``train_state.pth`` at the epochs of its ``metrics.json``)
    into ``dest`` (``pipeline.shipped``): ``models`` as partial checkpoints against the profile's bases,
    ``record_keys`` of the state as the training record, ``copy_patterns`` verbatim."""
    from pipeline.shipped import pack_run

    from .stage5_data import load_kept_set
    if dest is None:
        raise ValueError(f"profile {profile.name!r} has no stage5.shipped folder")
    state = read_checkpoint(Path(run) / "train_state.pth")
    s = settings_cls(**json.loads((Path(run) / "metrics.json").read_text())["settings"])
    if int(state["epoch"]) < int(s.epochs):
        raise ValueError(f"{run} is not finished: epoch {state['epoch']} of {s.epochs}")
    key = json.loads(state["settings_json"])
    kept = load_kept_set(profile, Path(key["labels"]), label_names, show_progress=False)
    return pack_run(run, dest, stage, shipped_settings(profile, key, s, kept.img_nos),
                    {k: state[k] for k in record_keys if k in state}, shipped_bases(profile, models), copy_patterns,
                    img_nos=kept.img_nos)


def settings_key(settings, exclude=("epochs",)) -> dict:
    """The settings a resumed / re-run training must share with the stored one (JSON-normalised)."""
    d = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings)
    return json.loads(json.dumps({k: v for k, v in d.items() if k not in exclude}, default=str))


def diff_settings(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}: stored {old.get(k)!r}, now {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def save_state(path: Path, state: dict) -> None:
    save_checkpoint(state, path)


def load_state(path: Path, key: dict) -> dict | None:
    """A stored training state, or None; a state made with other settings is an error naming them."""
    if not Path(path).is_file():
        return None
    st = read_checkpoint(path)
    stored = json.loads(st["settings_json"])
    if stored != key:
        raise ValueError(f"training state {path} was made with other settings ({diff_settings(stored, key)}); "
                         f"use another output folder or delete it to start over")
    return st


# ------------------------------------------------------------------------------------ judges

def evaluator_calibration(evaluator, images_u8_nchw: torch.Tensor, labels: np.ndarray, label_names,
                          batch_size: int = 128) -> dict:
    """Affine maps (scale, offset) from the evaluator's world units to label units, fitted by least
    squares on the kept set (its images and their labels); keys are the project's property names."""
    names = {"eyes": "eyes_open", "mouth": "mouth_open", "pose": "pose", "hair_color": "hair_color",
             "hair_length": "hair_length", "background_mean": "bg_mean", "background_std": "bg_std"}
    imgs = images_u8_nchw.permute(0, 2, 3, 1).contiguous().numpy()
    pred = evaluator.predict(imgs, batch_size=batch_size)
    out = {}
    for j, p in enumerate(label_names):
        if p in names and names[p] in pred:
            x = np.asarray(pred[names[p]], np.float64)
            a, b = np.polyfit(x, labels[:, j].astype(np.float64), 1)
            out[p] = (float(a), float(b))
    return out


def make_judges(property_cnn, evaluator, calibration: dict | None = None, dropout: bool = False,
                dropout_seed: int = 0) -> list:
    judges = []
    if property_cnn is not None:
        judges.append(PropertyCNNJudge(property_cnn, dropout=dropout, dropout_seed=dropout_seed))
    if evaluator is not None:
        judges.append(EvaluatorJudge(evaluator, calibration=calibration))
    return judges


def test_settings_from(cfg: dict) -> GenerationTestSettings:
    """A :class:`GenerationTestSettings` from a ``stage5.generation_test`` dict."""
    fields = {f.name for f in dataclasses.fields(GenerationTestSettings)}
    kw = {k: (tuple(v) if k == "loop_order" else v) for k, v in cfg.items() if k in fields}
    if "grid" in kw:
        kw["grid"] = {k: tuple(v) for k, v in kw["grid"].items()}
    return GenerationTestSettings(**kw)


# ------------------------------------------------------------------------------------ female share

def random_labels(n: int, label_names, seed: int) -> np.ndarray:
    """N(0, 1) labels [n, L] from a seeded stream (the original's random-label protocol)."""
    return np.random.default_rng([int(seed), 31]).standard_normal((n, len(label_names))).astype(np.float32)


def female_share(g, gender_cnn, evaluator, n: int = 300, seed: int = 0, z=None, batch_size: int = 50,
                 labels: np.ndarray | None = None, z_source: str | None = None) -> dict:
    """Share of female outputs over ``n`` seeded random (z, N(0, 1) label) pairs (or the given z / labels),
    by the gender CNN (mean probability >= 0.5) and by the evaluator's ``female`` (>= 0.5)."""
    z_given = z
    z = latent_z(range(n), int(g.cfg.z_dim), int(seed) + 900_000) if z is None else np.asarray(z, np.float32)
    lab = random_labels(len(z), g.label_names, seed) if labels is None else labels
    probs_g, probs_e = [], []
    for a, b in batch_ranges(len(z), batch_size):
        imgs = synthesize(g, z[a:b], lab[a:b]).cpu()
        if gender_cnn is not None:
            with torch.inference_mode():
                probs_g.append(gender_cnn((imgs.clamp(-1, 1) + 1) / 2).reshape(-1).numpy())
        if evaluator is not None:
            probs_e.append(evaluator.predict(postprocess(imgs))["female"])
    out = {"n": int(len(z)), "seed": int(seed), "labels": "N(0, 1)" if labels is None else "given",
           "z": z_source or ("seeded N(0, I)" if z_given is None else "given")}
    if probs_g:
        p = np.concatenate(probs_g)
        out["gender_cnn"] = {"share": float((p >= 0.5).mean()), "mean_probability": float(p.mean())}
    if probs_e:
        p = np.concatenate(probs_e)
        out["evaluator"] = {"share": float((p >= 0.5).mean()), "mean_probability": float(p.mean())}
    return out


# ------------------------------------------------------------------------------------ monitoring grid

def monitor_labels(label_names) -> np.ndarray:
    """The 7 monitoring labels restricted to ``label_names`` (v4: the P3 columns)."""
    return MONITOR_LABELS[:, [P7.index(n) for n in label_names]]


def grid_figure(g, path: Path, n_z: int = 10, seed: int = 0, title: str = "") -> Path:
    """10 seeded z (rows) x the 7 monitoring labels (columns), eval semantics."""
    z = latent_z(range(n_z), int(g.cfg.z_dim), int(seed) + 800_000)
    labels = monitor_labels(g.label_names)
    zi, li = np.repeat(np.arange(n_z), len(labels)), np.tile(np.arange(len(labels)), n_z)
    imgs = np.concatenate([postprocess(synthesize(g, z[zi[a:b]], labels[li[a:b]]).cpu())
                           for a, b in batch_ranges(len(zi), 35)])
    cells = [list(imgs[i * len(labels):(i + 1) * len(labels)]) for i in range(n_z)]
    cols = [f"{i + 1}: {c}" for i, c in enumerate(MONITOR_CHANGED)]
    return mosaic_figure(cells, [f"z {i}" for i in range(n_z)], cols, Path(path), title)


def write_z_csv(path: Path, z: np.ndarray) -> None:
    import pandas as pd
    df = pd.DataFrame(np.asarray(z, np.float32), columns=[str(i) for i in range(z.shape[1])])
    atomic_write_csv(path, df)


def read_z_csv(path: Path) -> np.ndarray:
    import pandas as pd
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"latent file {path} not found")
    df = pd.read_csv(path)
    df = df[[c for c in df.columns if c != "z_idx"]]
    vals = df.to_numpy(np.float64)
    if not np.isfinite(vals).all():
        r, c = np.argwhere(~np.isfinite(vals))[0]
        raise ValueError(f"latent file {path}, row {r + 1}, column {df.columns[c]!r} is not a finite number")
    return vals.astype(np.float32)


__all__ = ["MONITOR_LABELS", "P3", "P7", "base_discriminator_state", "base_generator_state", "build_configs",
           "evaluator_calibration", "female_share", "grid_figure", "load_state", "make_judges", "monitor_labels",
           "random_labels", "read_z_csv", "save_state", "settings_key", "test_settings_from", "write_z_csv"]


# ------------------------------------------------------------------------------------ oracle reference

def oracle_reference(profile) -> dict | None:
    """The generation test of the ideal generator (``python -m synthface.oracle_test``), when it was run."""
    path = profile.data_root / "stage5" / "oracle" / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def leak_identity_table(test: dict | None, oracle: dict | None) -> str:
    """Leak (mean |r| over the z between a label and another measured property) and identity stability
    (within-z std / across-z std), per judge, beside the oracle's figures through the same judges."""
    from pipeline.reports import markdown_table
    if test is None:
        return "No generation test."
    rows = []
    for name, j in test["judges"].items():
        o = (oracle or {}).get("judges", {}).get(name, {})
        for k, v in sorted(j.get("leak_mean_abs_r", {}).items()):
            ov = o.get("leak_mean_abs_r", {}).get(k)
            rows.append([name, f"leak {k.replace('_to_', ' -> ')}", f"{v:.3f}", "" if ov is None else f"{ov:.3f}"])
        for k, v in sorted((j.get("identity_mean_within_std") or {}).items()):
            ov = (o.get("identity_mean_within_std") or {}).get(k)
            rows.append([name, f"identity {k} (within / across std)", f"{v:.3f}", "" if ov is None else f"{ov:.3f}"])
    note = ("" if oracle else "\n\nRun `python -m synthface.oracle_test` for the oracle column (the renderer with "
            "the label's eyes / mouth / pose and everything else z's: the least leak these judges can show).")
    return markdown_table(["judge", "figure", "this generator", "oracle"], rows) + note
