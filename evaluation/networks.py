"""The networks a stage-5 run loads to steer or judge its generator: the stage-2 gender CNN, the
property-score CNN and, on world-backed profiles, the independent synthface evaluator.

* :func:`load_gender_cnn`: the stage-2 gender fold models (``stage2/cnn/models/gender_model_{k}.pt``,
  built with the settings stage 2 recorded beside them), their mean (default) or fold 0 only (the
  original's), as a frozen module on [0, 1] images;
* :func:`load_property_cnn_for`: the property CNN of ``run_property_score_cnn.py`` (architecture
  from the profile's ``stage5.property_cnn`` block over the code defaults);
* :func:`load_evaluator_for`: the synthface evaluator, or None when the profile has no world.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch
import torch.nn as nn

from cnn.kfold import FoldSettings, load_model, model_path
from cnn.kfold import trained_fold_settings as kfold_trained_settings
from cnn.property_score_cnn import PropertyCNNSettings, load_property_cnn
from pipeline.io import InputError
from synthface.evaluate_generator import load_or_train_evaluator
from synthface.truth import world

ARCHITECTURE = ("width", "padding", "head_units")     # the property CNN's shape keys of stage5.property_cnn


class NetworkInputError(InputError):
    """A network file a stage needs is missing (the message names it and the script that writes it)."""


class GenderEnsemble(nn.Module):
    """Mean female probability of the stage-2 gender fold models; input [B, 3, R, R] in [0, 1]."""

    def __init__(self, models):
        super().__init__()
        self.models = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.models]).mean(dim=0)


def trained_fold_settings(stage2_dir: Path, prop: str) -> FoldSettings:
    """The settings stage 2 trained the fold models of ``prop`` with (``cnn/models/run_config_{prop}.json``)."""
    try:
        return kfold_trained_settings(stage2_dir, prop)
    except FileNotFoundError as exc:
        raise NetworkInputError(str(exc)) from None


def load_gender_cnn(stage2_dir: Path, folds: str = "mean") -> GenderEnsemble:
    """The gender CNN of ``stage2_dir`` as a frozen eval-mode module: ``folds`` 'mean' (all K fold
    models) or 'fold0' (the original)."""
    if folds not in ("mean", "fold0"):
        raise ValueError(f"gender folds must be 'mean' (the K-fold mean) or 'fold0' (the original's), got {folds!r}")
    s = trained_fold_settings(stage2_dir, "gender")
    model_dir = Path(stage2_dir) / "cnn" / "models"
    ks = range(s.folds) if folds == "mean" else [0]
    models = []
    for k in ks:
        p = model_path(model_dir, "gender", k)
        if not p.is_file():
            raise NetworkInputError(f"gender CNN fold model {p} not found; run run_cnn.py first (stage 2 trains it)")
        models.append(load_model(s, p))
    return GenderEnsemble(models).eval().requires_grad_(False)


def property_cnn_architecture(profile) -> dict:
    """resolution, width, padding, head_units of the profile's property CNN."""
    d = {f.name: f.default for f in fields(PropertyCNNSettings)}
    block = profile.get("stage5", {}).get("property_cnn", {})
    return {"resolution": int(profile["resolution"]), **{k: block.get(k, d[k]) for k in ARCHITECTURE}}


def load_property_cnn_for(profile, path: Path) -> nn.Module:
    """The stage's property-score CNN (architecture from the profile), strict, eval, frozen."""
    cfg = property_cnn_architecture(profile)
    if not Path(path).is_file():
        raise NetworkInputError(f"property-score CNN {path} not found; run run_property_score_cnn.py first")
    return load_property_cnn(path, cfg["resolution"], cfg["width"], cfg["padding"], cfg["head_units"])


def evaluator_path(profile, override: str | None = None) -> Path | None:
    if "world_seed" not in profile:
        return None
    rel = override or profile.get("stage5", {}).get("evaluator", "synthface/weights/evaluator.pth")
    return profile.path(rel)


def load_evaluator_for(profile, override: str | None = None):
    """The independent synthface evaluator (never trained here), or None when the profile has no
    world or the weights file does not exist yet (the caller records that)."""
    path = evaluator_path(profile, override)
    if path is None or not path.is_file():
        return None
    return load_or_train_evaluator(world(int(profile["generator"]["z_dim"]), int(profile["world_seed"])),
                                   int(profile["resolution"]), path=path, show_progress=False)
