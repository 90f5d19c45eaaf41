"""What stage 7 starts from: the v9 generator (a setting), the judges as property scorers.

Generator source (setting ``generator``):

* a path (inside the data root when relative) of a FineTune-v9 generator checkpoint — default
  ``stage6/v9/generator.pth``, the stage-6 run's output; loaded strictly (key ``generator_key``
  when the file holds several entries); a missing file is an error naming it;
* ``shipped-v1``: a v9 generator made from the shipped FineTune-v1 (``stage5.shipped``/v1 on the
  profile's base generator) with the new branch drawn N(0, 0.15²) on the stored parameters
  (seed 0) — v9 as it starts, before stage 6; used for development and the demo until a stage-6
  run exists.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evaluation.networks import load_evaluator_for, load_property_cnn_for
from evaluation.scorers import evaluator_scorer, parsing_scorer, property_cnn_scorer
from pipeline import lineage
from pipeline.checkpoint import read_checkpoint
from pipeline.io import InputError, sha256_file
from pipeline.shipped import full_state
from segmentation.synth_segmenter import load_segmenter, parse_crops, resize_mask_nearest, whole_frame_crops
from stylegan_modified.v9 import build_v9_generator, init_v9_from_v1, load_v9_generator
from vectorfind.v9_adapter import V9MidGenerator

from .bases import base_generator_state, build_configs

SHIPPED_V1 = "shipped-v1"
PROPERTY_CNN = "stage5/property_cnn/property_score_cnn.pth"


def generator_file(profile, source: str) -> Path | None:
    """The checkpoint path of ``source`` (None for ``shipped-v1``)."""
    if source == SHIPPED_V1:
        return None
    p = Path(source)
    return p if p.is_absolute() else profile.data_root / p


def check_stage6(profile, path: Path) -> None:
    """A generator inside the data root's stage-6 run: that run must be complete and unchanged since it
    finished (pipeline.lineage), so stage 7 never samples a half-trained or hand-edited v9."""
    folder = Path(path).parent
    if folder == profile.data_root / "stage6" / "v9":
        lineage.check_upstreams({"stage6/v9": (folder, "run_stylegan_finetune_v9.py")}, deep=False)


def load_generator(profile, source: str, key: str | None = None, batch_size: int = 50, image_batch: int | None = None,
                   path: str = "exact") -> tuple[V9MidGenerator, dict]:
    """(MidGenerator, record) where record names the source and its digest (lineage); ``batch_size``
    mapping rows, ``image_batch`` synthesis images per call on inference ``path`` (``V9MidGenerator``)."""
    wrap = lambda g: V9MidGenerator(g.eval(), batch_size, image_batch, path)      # noqa: E731
    gcfg, _ = build_configs(profile)
    if source == SHIPPED_V1:
        shipped = profile.path(profile.get("stage5", {}).get("shipped", ""))
        partial = Path(shipped) / "v1" / "generator.pth.partial.pth"
        if not partial.is_file():
            raise InputError(f"generator source {SHIPPED_V1!r} needs {partial} (the shipped FineTune-v1)")
        base, _ = base_generator_state(profile)
        g = build_v9_generator(gcfg)
        init_v9_from_v1(g, full_state(read_checkpoint(partial), base, str(partial)), seed=0)
        return wrap(g), {"stage": "generator", "source": SHIPPED_V1, "outputs_digest": sha256_file(partial)}
    file = generator_file(profile, source)
    if not file.is_file():
        raise InputError(f"v9 generator {file} not found: run run_stylegan_finetune_v9.py (stage 6) first, "
                         f"or pass --generator {SHIPPED_V1} (v9 made from the shipped FineTune-v1)")
    check_stage6(profile, file)
    g = load_v9_generator(file, gcfg, key)
    return wrap(g), {"stage": "generator", "source": str(file), "outputs_digest": sha256_file(file)}


def property_cnn_path(profile) -> Path:
    """The data root's property CNN (stage 5), else the shipped one."""
    local = profile.data_root / PROPERTY_CNN
    if local.is_file():
        return local
    shipped = profile.path(profile.get("stage5", {}).get("shipped", ""))
    cand = Path(shipped) / "property_cnn" / "property_score_cnn.pth" if shipped else None
    if cand is not None and cand.is_file():
        return cand
    raise InputError(f"property-score CNN {local} not found; run run_property_score_cnn.py first")


def build_scorers(profile, names, *, hairstyle_judge: str = "evaluator", dropout: bool = False,
                  dropout_seed: int | None = 0) -> tuple[dict, dict]:
    """judge name -> PropertyScorer for ``names`` (property_cnn / evaluator / parsing); and a
    description of each (what it is, where its weights came from)."""
    cache, desc = {}, {}

    def get(name):
        if name in cache:
            return cache[name]
        if name == "evaluator":
            ev = load_evaluator_for(profile)
            if ev is None:
                raise InputError(f"profile {profile.name!r} has no independent evaluator (needs a world and "
                                 f"its weights file)")
            cache[name] = evaluator_scorer(ev)
        elif name == "parsing":
            seg = profile.path(profile.get("segmentation", {}).get("checkpoint"))
            if seg is None or not Path(seg).is_file():
                raise InputError(f"the parsing judge needs the profile's segmenter; {seg} not found")
            stats_path = profile.data_root / "stage4" / "all_scores_v2_norm_stats.json"
            stats = json.loads(stats_path.read_text())["columns"] if stats_path.is_file() else None
            cache[name] = parsing_scorer(load_segmenter(seg), stats)
            desc[name] = {"scale": "stage-4 N(0,1)" if stats else f"raw ({stats_path} not found)"}
        elif name == "property_cnn":
            path = property_cnn_path(profile)
            cache[name] = property_cnn_scorer(load_property_cnn_for(profile, path), get(hairstyle_judge).judge,
                                              dropout, dropout_seed)
            desc[name] = {"weights": str(path), "hairstyle_from": hairstyle_judge}
        else:
            raise InputError(f"unknown judge {name!r}; expected property_cnn, evaluator or parsing")
        desc.setdefault(name, {}).update(cache[name].describe())
        return cache[name]

    return {n: get(n) for n in names}, desc


def region_parser(profile):
    """``parse(uint8 NHWC) -> class ids [N, H, W]`` at the images' size: the profile's stage-3 parser on
    whole frames (what ``pixel_local`` needs; ``pipeline.vocabulary.CLASS_NAMES``)."""
    seg = profile.path(profile.get("segmentation", {}).get("checkpoint"))
    if seg is None or not Path(seg).is_file():
        raise InputError(f"pixel_local needs the profile's segmenter (stage 3's parser); {seg} not found")
    model = load_segmenter(seg)

    def parse(images_u8: np.ndarray) -> np.ndarray:
        maps = parse_crops(model, whole_frame_crops(images_u8))
        return np.stack([resize_mask_nearest(np.asarray(m), images_u8.shape[1]) for m in maps])
    return parse
