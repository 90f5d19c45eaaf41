"""Tiny finished worlds for the fault suite, built once per session, copied per case.

* ``stage1``: a 32-px random-init generator profile (stage 1 runs in about a second);
* ``stage2``: a 64-px stage-1 folder of world renders with hand labels (120 images, 80 labelled);
* ``stage34``: 128-px stages 1-3 of the world (stage-3 maps from the true masks) for stages 3 and 4;
* ``stage5``: :func:`tests.stage5_world.make_root` (64 px; stages 1, 2, 4 and a base checkpoint);
* ``stage5s``: ``stage5`` with the property CNN, FineTune-v1 and v3 trained (1 thread) and packed as
  shipped runs (``<root>/shipped``, the profile's ``stage5.shipped``).

Every upstream folder is sealed (:func:`pipeline.lineage.seal`) as a finished stage would be.
``World.copy(tmp)`` gives a case its own data root and profile file (scripts take ``--profile x.json``).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import lineage
from pipeline.io import atomic_write_csv, atomic_write_png

STAGE2_SETTINGS = {"folds": 2, "batch_size": 16, "valid_batch_size": 32, "score_batch_size": 16, "max_epochs": 2,
                   "t_max": 2, "width": 0.125, "padding": 1, "init": "kaiming", "lr": 5e-4, "threshold": 10.0,
                   "max_attempts": 2, "seed": 0, "gender_min": 0.5, "quality_min": 0.5, "age_max": 0.5,
                   "glass_max": 0.5}


@dataclass
class World:
    root: Path               # holds runs/ (the data root) and base files
    profile: dict

    def copy(self, dest: Path) -> tuple[Path, Path]:
        """(data root, profile file) of a private copy under ``dest``."""
        shutil.copytree(self.root, dest / "w", symlinks=True)
        prof = json.loads(json.dumps(self.profile).replace(str(self.root), str(dest / "w")))
        path = dest / f"{prof['name']}.json"
        path.write_text(json.dumps(prof))
        return Path(prof["data_root"]), path


def stage1_world(root: Path) -> World:
    prof = {"name": "rel1", "data_root": str(root / "runs"), "resolution": 32,
            "generator": {"resolution": 32, "z_dim": 32, "w_dim": 32, "mapping_layers": 2, "mapping_fmaps": 32,
                          "fmaps_base": 256, "fmaps_max": 32},
            "generator_checkpoint": None, "random_init_seed": 7, "stage1": {"batch_size": 4}}
    (root / "runs").mkdir(parents=True)
    return World(root, prof)


def stage2_world(root: Path, n: int = 120, labelled: int = 80, res: int = 64) -> World:
    from synthface.hand_labels import write_hand_labels
    from synthface.renderer import render_batch
    from synthface.world import WorldMap
    s1 = root / "runs" / "stage1"
    world = WorldMap(256, 0)
    z = world.sample_z(n, seed=0)
    rgb, _ = render_batch(world.truth(z), res)
    for i in range(n):
        atomic_write_png(s1 / "images" / f"{i:06d}.png", rgb[i])
    lat = pd.concat([pd.DataFrame({"img_no": np.arange(n), "img_name": [f"{i:06d}.png" for i in range(n)]}),
                     pd.DataFrame(z, columns=[f"z_{i}" for i in range(256)])], axis=1)
    atomic_write_csv(s1 / "latents.csv", lat)
    write_hand_labels(s1, lat, 0, labelled, 0.0, 0)
    lineage.seal(s1)
    per = ("lr", "threshold", "width", "cut")
    st = {k: ({p: v for p in ("gender", "quality", "age", "glass")} if k in per else v)
          for k, v in STAGE2_SETTINGS.items()}
    prof = {"name": "rel2", "data_root": str(root / "runs"), "resolution": res, "world_seed": 0,
            "generator": {"resolution": res, "z_dim": 256}, "generator_checkpoint": None, "stage2": st}
    return World(root, prof)


def stage34_world(root: Path) -> World:
    from tests.test_scoring import make_layout
    runs = root / "runs"
    make_layout(runs, n_images=12)                 # stages 1-3, sealed
    s1, s2, s3 = (lineage.upstream(runs / s, s, "") for s in ("stage1", "stage2", "stage3"))
    lineage.seal(runs / "stage2", {"stage1": s1})  # consistent records: stage 3 from this stage 2
    s2 = lineage.upstream(runs / "stage2", "stage2", "")
    lineage.seal(runs / "stage3", {"stage2": s2, "stage1": s1})
    prof = {"name": "rel34", "data_root": str(runs), "resolution": 128, "world_seed": 0,
            "generator": {"resolution": 128, "z_dim": 256}, "generator_checkpoint": None,
            "segmentation": {"backend": "synthface", "checkpoint": "synthface/weights/segmenter.pth",
                             "batch_size": 4, "on_no_face": "whole_frame"}}
    return World(root, prof)


def stage5_world(root: Path) -> World:
    from tests.stage5_world import make_root, profile_dict
    make_root(root, n=24)
    return World(root, profile_dict(root))


def stage5_shipped_world(root: Path) -> World:
    import dataclasses

    import torch

    from pipeline.profiles import Profile
    from stages.finetune_gan import run_gan_stage
    from stages.finetune_v3 import run_v3_stage
    from stages.property_cnn import run_property_stage
    from stages.settings import TEST_DEFAULTS
    from stages.settings import profile_section
    from stages.shipping import pack_gan_run, pack_property_run, pack_v3_run
    from tests.stage5_world import make_root, profile_dict
    from training.cvae import V3Settings
    from training.gan import GanSettings
    make_root(root, n=24)
    prof = profile_dict(root)
    prof["stage5"]["shipped"] = str(root / "shipped")
    p = Profile(json.loads(json.dumps(prof)))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        test = profile_section(p, "generation_test", dict(TEST_DEFAULTS))
        g = {f.name: f.default for f in dataclasses.fields(GanSettings)}
        v = {f.name: f.default for f in dataclasses.fields(V3Settings)}
        run_property_stage(p, show_progress=False)
        run_gan_stage(p, GanSettings(**{**profile_section(p, "v1", g), "version": "v1"}), test, female_n=6,
                      show_progress=False)
        run_v3_stage(p, V3Settings(**profile_section(p, "v3", v)), test, female_n=6, show_progress=False)
        pack_property_run(p), pack_gan_run(p, "v1"), pack_v3_run(p)
    finally:
        torch.set_num_threads(n)
    return World(root, prof)
