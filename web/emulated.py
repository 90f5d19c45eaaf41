"""The synthface world's emulated labeller, for replaying it on the labelling page and for
checking the tool's output against the labels stage 2 uses."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.latents import read_latents
from synthface.hand_labels import labels_for_stage1


def emulated_labels(profile, stage1_dir: str | Path) -> pd.DataFrame | None:
    """The labels the profile's emulated labeller gives the stage-1 images it labels
    (``img_name, quality, gender, age, glass``), exactly as stage 1 writes them; None on a
    profile without a world (celeba256)."""
    if profile.get("world_seed") is None or "hand_labels" not in profile:
        return None
    latents_csv = Path(stage1_dir) / "latents.csv"
    nos, z = read_latents(latents_csv, None, profile["generator"]["z_dim"])
    latents = pd.concat([pd.DataFrame({"img_no": nos}),
                         pd.DataFrame(z, columns=[f"z_{i}" for i in range(z.shape[1])])], axis=1)
    cfg = profile["hand_labels"]
    df, _ = labels_for_stage1(latents, int(profile["world_seed"]), min(int(cfg["count"]), len(latents)),
                              float(cfg["noise_rate"]), int(cfg["seed"]))
    return df.reset_index(drop=True)


def compare(labels: pd.DataFrame, reference: pd.DataFrame, properties) -> dict:
    """Agreement of ``labels`` with ``reference`` on the images both hold, per property."""
    m = labels.merge(reference, on="img_name", suffixes=("", "_ref"), validate="1:1")
    out = {"images": int(len(m)), "missing_from_reference": int(len(labels) - len(m))}
    for p in properties:
        out[p] = {"agree": int((m[p] == m[p + "_ref"]).sum()), "of": int(len(m))}
    out["all_equal"] = bool(len(m) == len(labels) and all(out[p]["agree"] == len(m) for p in properties))
    return out
