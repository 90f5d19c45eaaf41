"""A tiny world-backed data root for the stage-5 tests (64 px, z 96, seconds to build).

``make_root(tmp_path)`` writes what stages 1, 2 and 4 would have written, in their layouts:
``stage1/latents.csv``; ``stage2/filtered/NNNNNN.png`` (renders of concept faces) and
random-init gender fold models ``stage2/cnn/models/gender_model_{k}.pt``;
``stage4/all_scores_v2.csv`` and ``all_scores.csv`` (standardised truth, pandas index first),
plus a random base generator / discriminator checkpoint; returns the profile.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline import lineage
from pipeline.io import atomic_write_csv, atomic_write_png
from pipeline.profiles import Profile
from pipeline.checkpoint import save_checkpoint
from stylegan.discriminator import DiscriminatorConfig, StyleGANDiscriminator
from stylegan.generator import GeneratorConfig, StyleGANGenerator
from stylegan.sampling import latent_z

RES, ZDIM = 64, 96
TRUTH = {"eyes": "eyes_open", "hair_color": "hair_color", "hair_length": "hair_length", "mouth": "mouth_open",
         "pose": "pose", "background_mean": "bg_mean", "background_std": "bg_std"}


def profile_dict(root: Path) -> dict:
    return {
        "name": "s5tiny", "data_root": str(root / "runs"), "resolution": RES, "world_seed": 0,
        "generator": {"resolution": RES, "z_dim": ZDIM, "w_dim": 32, "mapping_layers": 2, "mapping_fmaps": 32,
                      "fmaps_base": 256, "fmaps_max": 16},
        "discriminator": {"resolution": RES, "fmaps_base": 256, "fmaps_max": 16},
        "generator_checkpoint": str(root / "base.pth"), "generator_checkpoint_key": "generator",
        "stage2": {"folds": 2, "width": {"gender": 0.125}, "padding": 1, "lr": {"gender": 1e-3},
                   "threshold": {"gender": 0.7}, "cut": {"gender": 0.5}},
        "stage5": {
            "evaluator": str(root / "no_evaluator.pth"),
            "property_cnn": {"width": 0.125, "padding": 1, "head_units": 8, "lr": 2e-3, "batch_size": 16,
                             "valid_batch_size": 32, "max_epochs": 2, "patience": 2, "valid_fraction": 0.25},
            "v1": {"epochs": 1, "batch_size": 8, "max_steps_per_epoch": 3, "mbstd_group": 4, "grid_z": 2},
            "v4": {"epochs": 1, "batch_size": 8, "max_steps_per_epoch": 2, "mbstd_group": 4, "grid_z": 2},
            "v3": {"epochs": 2, "batch_size": 8, "max_steps_per_epoch": 3, "init_from": "base"},
            "generation_test": {"n_z": 2, "z_seed": 0, "batch_size": 50},
        },
    }


def make_root(tmp_path: Path, n: int = 40) -> Profile:
    from cnn.filter_cnns import FilterCNN
    from cnn.kfold import FoldSettings
    from synthface.renderer import render_batch
    from synthface.world import WorldMap
    prof = Profile(profile_dict(Path(tmp_path)))
    root = prof.data_root
    world = WorldMap(ZDIM, 0)
    z = latent_z(range(4 * n), ZDIM, 0)
    t = world.truth(z)
    keep = np.flatnonzero(t["concept"].to_numpy() > 0.5)[:n]
    df = pd.concat([pd.DataFrame({"img_no": np.arange(len(z)), "img_name": [f"{i:06d}.png" for i in range(len(z))]}),
                    pd.DataFrame(z, columns=[f"z_{i}" for i in range(ZDIM)])], axis=1)
    atomic_write_csv(root / "stage1" / "latents.csv", df)
    rgb, _ = render_batch(t.iloc[keep].reset_index(drop=True), RES)
    for i, img in zip(keep, rgb):
        atomic_write_png(root / "stage2" / "filtered" / f"{i:06d}.png", img)
    scores = pd.DataFrame({"img_no": keep, "img_path": [f"stage2/filtered/{i:06d}.png" for i in keep]})
    for p, col in TRUTH.items():
        v = t[col].to_numpy(np.float64)[keep]
        scores[f"{p}_score"] = np.round((v - v.mean()) / v.std(ddof=1), 4)
    for name in ("all_scores_v2.csv", "all_scores.csv"):
        (root / "stage4").mkdir(parents=True, exist_ok=True)
        (root / "stage4" / name).write_text(scores.to_csv(index=True, lineterminator="\n"))
    gcfg = GeneratorConfig.from_dict(prof["generator"])
    dcfg = DiscriminatorConfig.from_dict(prof["discriminator"])
    with torch.random.fork_rng():
        torch.manual_seed(3)
        g, d = StyleGANGenerator(gcfg), StyleGANDiscriminator(dcfg)
        save_checkpoint({"generator": g.state_dict(), "discriminator": d.state_dict()}, Path(tmp_path) / "base.pth")
        for k in range(2):
            m = FilterCNN("gender", RES, 0.125, 1)
            save_checkpoint(m.state_dict(), root / "stage2" / "cnn" / "models" / f"gender_model_{k}.pt")
    fs = FoldSettings(prop="gender", lr=1e-3, threshold=0.7, cut=0.5, resolution=RES, width=0.125, padding=1, folds=2)
    (root / "stage2" / "cnn" / "models" / "run_config_gender.json").write_text(json.dumps({"settings": fs.to_dict()}))
    for stage in ("stage1", "stage2", "stage4"):     # finished upstream stages as far as stage 5 can tell
        lineage.seal(root / stage)
    return prof


def world_with_property_cnn(tmp_path_factory, name: str) -> Profile:
    """A data root (:func:`make_root`) whose property CNN is trained (2 epochs), for module fixtures."""
    from stages.property_cnn import run_property_stage
    torch.set_num_threads(1)
    prof = make_root(tmp_path_factory.mktemp(name))
    run_property_stage(prof, show_progress=False)
    return prof


def interrupted_then_resumed(monkeypatch, trainer_cls, run, out_a: Path, out_b: Path, files) -> None:
    """``run(out)`` uninterrupted into ``out_a``; into ``out_b`` interrupted at step 3 of the first
    epoch, then resumed; the files of both runs must hold the same tensors."""
    import pytest
    run(out_a)
    real = trainer_cls.train_step

    def failing(self, x, y, epoch, step):
        if step == 3:
            raise KeyboardInterrupt
        return real(self, x, y, epoch, step)

    monkeypatch.setattr(trainer_cls, "train_step", failing)
    with pytest.raises(KeyboardInterrupt):
        run(out_b)
    assert (out_b / "train_state.pth").is_file()
    monkeypatch.setattr(trainer_cls, "train_step", real)
    run(out_b)
    for name in files:
        a = torch.load(out_a / name, weights_only=True)
        b = torch.load(out_b / name, weights_only=True)
        assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5) for k in a), name
