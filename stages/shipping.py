"""Pack finished stage-5 runs into the profile's shipped folder (:mod:`pipeline.shipped`), the stage
of ``run_pack_shipped.py``.

Each run must be finished by its script at the settings it is to be shipped with; a fresh
checkout then installs it instead of retraining (the stage only repeats its test and report).
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.checkpoint import read_checkpoint
from pipeline.profiles import load_profile
from pipeline.shipped import pack_run, run_settings, shipped_dir
from pipeline.vocabulary import PROPERTIES as P7
from training.cvae import V3Settings
from training.gan import GanSettings
from training.loop import STATE_FILE

from .bases import kept_set_of, shipped_bases
from .finetune_gan import GAN_SHIPPED_COPY, GAN_SHIPPED_MODELS, LABEL_NAMES
from .finetune_gan import default_paths as gan_paths
from .finetune_v3 import V3_SHIPPED_COPY, V3_SHIPPED_MODELS
from .finetune_v3 import default_paths as v3_paths
from .finetune_v9 import pack_v9_run, shipped_folder
from .property_cnn import CHECKPOINT, OUT_SUBDIR, TARGET_CSV, shipped_settings

STAGES = ("property_cnn", "v1", "v4", "v3", "v9")
DEFAULT_STAGES = ("property_cnn", "v1", "v3")
RECORD = ("log_json", "epoch", "step", "phase")      # the loop's state without tensors: the training record


def pack_property_run(profile, run_dir: Path | None = None, dest: Path | None = None) -> dict:
    """Pack the finished property-CNN run into the profile's shipped folder: the checkpoint and the logs."""
    run = Path(run_dir) if run_dir else profile.data_root / OUT_SUBDIR
    dest = Path(dest) if dest else shipped_dir(profile, "property_cnn")
    if dest is None:
        raise ValueError(f"profile {profile.name!r} has no stage5.shipped folder")
    if not (run / CHECKPOINT).is_file() or not (run / "metrics.json").is_file():
        raise ValueError(f"{run} holds no finished property CNN (checkpoint and metrics.json)")
    m = json.loads((run / "metrics.json").read_text())
    cfg = {**json.loads((run / "run_config.json").read_text()), "max_epochs": m["settings"]["max_epochs"]}
    kept = kept_set_of(profile, profile.data_root / TARGET_CSV, P7, show_progress=False)
    return pack_run(run, dest, "property CNN", shipped_settings(cfg, len(kept), kept.img_nos),
                    {"train_s": m["timings"]["train_s"], "epochs": m["epochs"], "best_epoch": m["best_epoch"]},
                    {}, (CHECKPOINT, "train_log.csv", "val_log.csv"), img_nos=kept.img_nos)


def pack_training_run(profile, run: Path, dest: Path | None, stage: str, settings_cls, label_names,
                      models: dict, copy_patterns) -> dict:
    """Pack a finished v1 / v4 / v3 run (its ``train_state.pth`` at the epochs of its ``metrics.json``)
    into ``dest`` (``pipeline.shipped``): ``models`` as partial checkpoints against the profile's bases,
    the loop's record of the state (:data:`RECORD`), ``copy_patterns`` verbatim."""
    if dest is None:
        raise ValueError(f"profile {profile.name!r} has no stage5.shipped folder")
    state = read_checkpoint(Path(run) / STATE_FILE)
    s = settings_cls(**json.loads((Path(run) / "metrics.json").read_text())["settings"])
    if int(state["epoch"]) < int(s.epochs):
        raise ValueError(f"{run} is not finished: epoch {state['epoch']} of {s.epochs}")
    key = json.loads(state["settings_json"])
    kept = kept_set_of(profile, Path(key["labels"]), label_names, show_progress=False)
    return pack_run(run, dest, stage, run_settings(profile.data_root, key, s.epochs, kept.img_nos),
                    {k: state[k] for k in RECORD if k in state}, shipped_bases(profile, models), copy_patterns,
                    img_nos=kept.img_nos)


def pack_gan_run(profile, version: str = "v1", run_dir: Path | None = None, dest: Path | None = None) -> dict:
    """Pack the finished FineTune-v1 / v4 run into the profile's shipped folder."""
    return pack_training_run(profile, Path(run_dir) if run_dir else gan_paths(profile, version)["out"],
                             Path(dest) if dest else shipped_dir(profile, version), f"FineTune-{version}",
                             GanSettings, LABEL_NAMES[version], GAN_SHIPPED_MODELS, GAN_SHIPPED_COPY)


def pack_v3_run(profile, run_dir: Path | None = None, dest: Path | None = None) -> dict:
    """Pack the finished FineTune-v3 run into the profile's shipped folder."""
    return pack_training_run(profile, Path(run_dir) if run_dir else v3_paths(profile)["out"],
                             Path(dest) if dest else shipped_dir(profile, "v3"), "FineTune-v3", V3Settings, P7,
                             V3_SHIPPED_MODELS, V3_SHIPPED_COPY)


def pack(profile, stage: str) -> dict:
    if stage == "property_cnn":
        return pack_property_run(profile)
    if stage in ("v1", "v4"):
        return pack_gan_run(profile, stage)
    if stage == "v3":
        return pack_v3_run(profile)
    if stage == "v9":
        return pack_v9_run(profile)
    raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")


def main(profile_name: str, stages) -> list[str]:
    """Pack ``stages`` (default :data:`DEFAULT_STAGES`) of the profile; returns one line per stage."""
    unknown = [st for st in stages if st not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    profile = load_profile(profile_name)
    lines = []
    for stage in stages or DEFAULT_STAGES:
        m = pack(profile, stage)
        folder = shipped_folder(profile) if stage == "v9" else shipped_dir(profile, stage)
        size = sum((folder / f).stat().st_size for f in m["files"])
        lines.append(f"{stage}: {len(m['files'])} files, {size / 2**20:.2f} MiB -> {folder}")
        print(lines[-1])
    return lines
