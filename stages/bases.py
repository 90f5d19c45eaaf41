"""What a stage-5 run starts from, read from the profile at the top of a stage: the kept set and its
stage-1 latents (plain paths below), the profile's unconditional generator and discriminator (the
bases FineTune-v1 / v3 fine-tune, and that shipped runs are stored against)."""
from __future__ import annotations

from pathlib import Path

from pipeline import lineage
from pipeline.checkpoint import CheckpointError, read_checkpoint, select_entry
from pipeline.kept_set import KeptSet, kept_latents, load_kept_set
from stylegan.discriminator import DiscriminatorConfig
from stylegan.generator import GeneratorConfig


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


def shipped_bases(profile, models: dict) -> dict:
    """file name -> (base state dict, base file) for ``models`` (file name -> 'generator' / 'discriminator')."""
    out = {}
    for name, kind in models.items():
        state, src = base_generator_state(profile) if kind == "generator" else base_discriminator_state(profile)
        out[name] = (state, Path(src.rsplit(" [", 1)[0]))
    return out


def kept_set_of(profile, label_file: Path, label_names, show_progress: bool = False) -> KeptSet:
    """The profile's kept set (``stage2/filtered/``) with the labels of ``label_file``."""
    return load_kept_set(profile.stage_dir("stage2"), label_file, label_names, int(profile["resolution"]),
                         show_progress)


def latents_of(profile, img_nos):
    """Stage-1 latents of the given images (``stage1/latents.csv``)."""
    return kept_latents(profile.stage_dir("stage1") / "latents.csv", img_nos, int(profile["generator"]["z_dim"]))


# ------------------------------------------------------------------------------------ lineage of stage 5

UPSTREAM_HINTS = {"stage1": "run_original_generator.py (stage 1)", "stage2": "run_cnn.py (stage 2)",
                  "stage4": "compute_property_scores_v2.py (stage 4)",
                  "stage5/property_cnn": "run_property_score_cnn.py (stage 5a)"}


def upstream_records(profile, label_file: Path) -> dict:
    """The ``consumed`` records of a stage-5 run (:func:`pipeline.lineage.check_upstreams`; writes
    nothing): stages 1 and 2 and the stage that made ``label_file`` (stage 4 or the property CNN) must
    be complete, unchanged and agree with each other; a label file outside the data root's stages is
    recorded by its hash."""
    root = profile.data_root
    ups = {k: (root / k, UPSTREAM_HINTS[k]) for k in ("stage1", "stage2")}
    files = {}
    folder = Path(label_file).parent
    rel = folder.relative_to(root).as_posix() if folder.is_relative_to(root) else None
    if rel in UPSTREAM_HINTS:
        ups[rel] = (folder, UPSTREAM_HINTS[rel])
    else:
        files["labels"] = Path(label_file)
    return lineage.check_upstreams(ups, files)


def restart_hint(out: Path) -> str:
    return f"delete {out} (or give another output folder) to train again from the current inputs"
