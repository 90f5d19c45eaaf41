"""What the direction leaderboard starts from: its generators and judges, and their lineage records.

* the v9 generator (setting ``generator_checkpoint``): the stage-6 run's ``stage6/v9/generator.pth``
  by default (an upstream stage: complete and unchanged since it finished, ``pipeline.lineage``),
  any other checkpoint path (recorded by content hash), or ``shipped-v1`` (v9 initialised from the
  shipped FineTune-v1, recorded by the hash of that file);
* the v3 generator of the reference row: the data root's stage-5 v3 run (``stage5/v3/generator.pth``,
  an upstream stage) when it is complete, else the shipped FineTune-v3 (``stage5.shipped``/v3);
* the judges: the independent evaluator (required), the property CNN (shipped), and stages 3–4
  (the profile's parser + the stage-4 normalisation of ``<data root>/stage4``, an upstream stage
  when its files are there).

:func:`upstream_records` names every one of these inputs without loading any of them, so a changed
or unfinished upstream is refused before the board reads or writes anything; the board records
them with :func:`pipeline.lineage.begin` and refuses to add to work made from other inputs.
"""
from __future__ import annotations

from pathlib import Path

from evaluation.judges import EvaluatorJudge, PropertyCNNJudge, parsing_judge
from evaluation.networks import evaluator_path, load_evaluator_for, load_property_cnn_for
from pipeline import lineage
from pipeline.checkpoint import read_checkpoint
from pipeline.io import InputError
from pipeline.shipped import full_state
from segmentation.synth_segmenter import load_segmenter
from stylegan_modified.loading import load_generator
from stylegan_modified.v9 import build_v9_generator, init_v9_from_v1, load_v9_generator

from .bases import build_configs, shipped_bases

SHIPPED_V1 = "shipped-v1"        # v9 initialised from the shipped FineTune-v1 (no v9 training)
STAGE6 = ("stage6", "v9")
STAGE4_STATS = "all_scores_v2_norm_stats.json"
HINTS = {"stage6/v9": "run_stylegan_finetune_v9.py (stage 6)", "stage4": "compute_property_scores_v2.py (stage 4)",
         "stage5/v3": "run_stylegan_fine_tuning_v3.py (stage 5)"}


def shipped_dir(profile) -> Path | None:
    block = profile.get("stage5", {}) if profile.get("stage5") else {}
    return profile.path(block["shipped"]) if block.get("shipped") else None


def generator_path(profile, checkpoint: str) -> Path | None:
    """The v9 checkpoint file of the setting (None for ``shipped-v1``)."""
    if checkpoint == SHIPPED_V1:
        return None
    path = Path(checkpoint)
    return path if path.is_absolute() else profile.data_root / path


def v3_source(profile) -> tuple[Path, bool] | None:
    """(file, is the data root's stage-5 run) of the v3 reference generator, or None."""
    local = profile.data_root / "stage5" / "v3"
    if (local / lineage.COMPLETION).is_file() and (local / "generator.pth").is_file():
        return local / "generator.pth", True
    shipped = shipped_dir(profile)
    partial = shipped / "v3" / "generator.pth.partial.pth" if shipped else None
    return (partial, False) if partial is not None and partial.is_file() else None


def upstream_records(profile, checkpoint: str, methods) -> dict:
    """The lineage records (``consumed``) of the board's inputs; raises LineageError / InputError
    naming an input that is missing, unfinished or changed since its stage finished."""
    upstreams, files = {}, {}
    shipped = shipped_dir(profile)
    path = generator_path(profile, checkpoint)
    if path is None:
        partial = shipped / "v1" / "generator.pth.partial.pth" if shipped else None
        if partial is None or not partial.is_file():
            raise InputError(f"no v9 generator: give --generator-checkpoint or ship FineTune-v1 (stage5.shipped); "
                             f"{partial} not found")
        files["generator"] = partial
    else:
        if not path.is_file():
            raise InputError(f"v9 generator {path} not found: run run_stylegan_finetune_v9.py (stage 6) first, "
                             f"or pass --generator-checkpoint {SHIPPED_V1} (v9 made from the shipped FineTune-v1)")
        if path.parent == profile.data_root.joinpath(*STAGE6):
            upstreams["stage6/v9"] = (path.parent, HINTS["stage6/v9"])
        files["generator"] = path
    v3 = v3_source(profile) if "v3_label" in methods else None
    if v3 is not None:
        if v3[1]:
            upstreams["stage5/v3"] = (v3[0].parent, HINTS["stage5/v3"])
        files["v3_generator"] = v3[0]
    stage4 = profile.data_root / "stage4"
    if (stage4 / STAGE4_STATS).is_file():                 # the parsing judge's scale: stage 4 as an upstream
        upstreams["stage4"] = (stage4, HINTS["stage4"])
    for name, p in (("evaluator", evaluator_path(profile)),
                    ("property_cnn", shipped / "property_cnn" / "property_score_cnn.pth" if shipped else None),
                    ("segmenter", profile.path(profile.get("segmentation", {}).get("checkpoint")))):
        if p is not None and Path(p).is_file():
            files[name] = p
    # stage folders by size (their files can be large checkpoints); the files used, by content hash
    return lineage.check_upstreams(upstreams, files, deep=False)


def load_models(profile, s) -> dict:
    """{"g9", "g3", "source", "judges", "judge_notes", "segmenter"} for the settings ``s``."""
    gcfg, _ = build_configs(profile)
    shipped = shipped_dir(profile)
    base = shipped_bases(profile, {"generator.pth": "generator"})["generator.pth"][0]
    path = generator_path(profile, s.generator_checkpoint)
    if path is not None:
        g9, source = load_v9_generator(path, gcfg), str(path)
    else:
        g1 = full_state(read_checkpoint(shipped / "v1" / "generator.pth.partial.pth"), base, "FineTune-v1 generator")
        g9 = build_v9_generator(gcfg)
        init_v9_from_v1(g9, g1, seed=s.seed)
        source = f"v9 initialised from the shipped FineTune-v1 ({shipped / 'v1'}), new branch seed {s.seed}"
    g3 = None
    v3 = v3_source(profile) if "v3_label" in s.methods else None
    if v3 is not None:
        state = v3[0] if v3[1] else full_state(read_checkpoint(v3[0]), base, "FineTune-v3 generator")
        g3 = load_generator(state, gcfg, "v3").eval()
    for g in (g9, g3):
        if g is not None:
            g.eval().requires_grad_(False)
    judges, notes = {}, {}
    ev = load_evaluator_for(profile)
    if ev is None:
        raise InputError(f"profile {profile.name!r}: the leaderboard's truth is the independent evaluator, not found")
    judges["evaluator"] = EvaluatorJudge(ev)
    try:
        cnn_path = shipped / "property_cnn" / "property_score_cnn.pth" if shipped else None
        judges["property_cnn"] = PropertyCNNJudge(load_property_cnn_for(profile, cnn_path))
    except Exception as e:                        # noqa: BLE001 - a missing judge is recorded, not fatal
        notes["property_cnn"] = f"not available: {e}"
    try:
        judges["parsing"] = parsing_judge(profile)
    except Exception as e:                        # noqa: BLE001 - stages 3-4 files may not exist in this data root
        notes["parsing"] = f"not available: {e}"
    seg = profile.get("segmentation", {}).get("checkpoint")
    segmenter = load_segmenter(profile.path(seg)) if seg else None
    return {"g9": g9, "g3": g3, "source": source, "judges": judges, "judge_notes": notes, "segmenter": segmenter}
