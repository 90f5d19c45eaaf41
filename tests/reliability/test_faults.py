"""The bad-input and fault matrix of stages 1-5: every case runs the stage's script (in this process,
through ``pipeline.entry.guarded`` as its ``__main__`` does) on a private copy of a tiny finished
world, after one damage. A refused case must exit with code 2, print one ``error:`` line naming the
file and the place (row / column / key / flag), and leave no partial or stale output; a resume case
must end byte-identical to the undamaged run.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline import lineage
from tests.reliability import damage as D
from tests.reliability.conftest import partial_outputs, run_script

QG = "stage1/synthesize_results_quality_and_gender.csv"
AG = "stage1/synthesize_results_age_and_glass.csv"


def refused(case, code: int, err: str, pattern: str, out: Path | None, before: list | None = None) -> None:
    """The common assertion of a refused case; fills the table row."""
    left = partial_outputs(out) if out is not None else []
    if before is not None:
        left = sorted(set(left) - set(before))
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ") or ": error: " in ln]   # guarded's or argparse's
    shown = re.sub(r"/tmp/pytest-of-[^/]+/pytest-\d+/[^/]+/", "<case>/", (lines or err.splitlines() or ["(none)"])[0])
    case["observed"] = f"exit {code}; {shown[:240]}" + \
        (f"; left {left[:3]}" if left else "; no partial output")
    assert code == 2, err
    assert lines, err
    assert re.search(pattern, err), f"{pattern!r} not in {err!r}"
    assert not left, left


# ==================================================================================== stage 1

S1_FLAGS = {
    "seed_negative": (["--seed", "-1"], r"flag --seed: seed must be"),
    "seed_too_large": (["--seed", "4294967296"], r"flag --seed: seed must be"),
    "batch_size_0": (["--batch-size", "0"], r"flag --batch-size: batch_size must be an integer >= 1"),
    "batch_size_negative": (["--batch-size", "-4"], r"flag --batch-size: batch_size must be"),
    "batch_size_text": (["--batch-size", "eight"], r"argument --batch-size: invalid int value: 'eight'"),
    "num_images_0": (["--num-images", "0"], r"flag --num-images: num_images must be"),
    "threads_0": (["--threads", "0"], r"flag --threads: threads must be a thread count >= 1"),
    "threads_negative": (["--threads", "-2"], r"flag --threads: threads must be"),
    "trunc_psi_1.5": (["--trunc-psi", "1.5"], r"flag --trunc-psi: trunc_psi must be a number in \[0, 1\]"),
    "trunc_psi_nan": (["--trunc-psi", "nan"], r"flag --trunc-psi: trunc_psi must be a finite number"),
    "style_mixing_prob_2": (["--style-mixing-prob", "2"], r"flag --style-mixing-prob: style_mixing_prob must be"),
    "trunc_layers_negative": (["--trunc-layers", "-1"], r"flag --trunc-layers: trunc_layers must be"),
    "shard_out_of_range": (["--shard", "2/2"], r"flag --shard 2/2: need 0 <= i < n"),
    "shard_text": (["--shard", "half"], r"flag --shard must look like i/n"),
}


def _s1_argv(prof: Path, out: Path, extra=()) -> list[str]:
    return ["--profile", str(prof), "--out", str(out), "--num-images", "8", "--no-progress", *extra]


@pytest.mark.parametrize("name", list(S1_FLAGS))
def test_stage1_flag(world1, tmp_path, capsys, case, name):
    extra, pattern = S1_FLAGS[name]
    case["expected"] = f"exit 2, error naming the flag ({pattern}), no folder"
    _, prof = world1.copy(tmp_path)
    out = tmp_path / "s1"
    code, err = run_script("run_original_generator", _s1_argv(prof, out, extra), capsys)
    refused(case, code, err, pattern, out)
    assert not out.exists()


def _prof_edit(fn):
    def apply(path: Path):
        data = json.loads(path.read_text())
        res = fn(data)
        path.write_text(res if isinstance(res, str) else json.dumps(data))
    return apply


S1_PROFILES = {
    "malformed_json": (lambda p: p.write_text('{"name": "rel1", '), r"rel1\.json is not valid JSON"),
    "empty_file": (lambda p: p.write_text(""), r"rel1\.json is not valid JSON"),
    "json_list": (lambda p: p.write_text("[1, 2]"), r"rel1\.json: expected a JSON object, got a JSON list"),
    "missing_generator_block": (_prof_edit(lambda d: d.pop("generator")), r"rel1\.json: missing key 'generator'"),
    "misspelt_z_dim": (_prof_edit(lambda d: d["generator"].update(z_dimm=d["generator"].pop("z_dim"))),
                       r"rel1\.json: unknown key generator\.'z_dimm'"),
    "resolution_as_text": (_prof_edit(lambda d: d.update(resolution="32")), r"rel1\.json: 'resolution' must be int"),
    "generator_width_as_text": (_prof_edit(lambda d: d["generator"].update(fmaps_max="32")),
                                r"rel1\.json: generator\.'fmaps_max' must be int"),
    "unknown_top_key": (_prof_edit(lambda d: d.update(stage9={})), r"rel1\.json: unknown key 'stage9'"),
    "stage1_block_not_object": (_prof_edit(lambda d: d.update(stage1=[4])), r"rel1\.json: 'stage1' must be dict"),
    "stage1_unknown_setting": (_prof_edit(lambda d: d["stage1"].update(batchsize=4)),
                               r"profile rel1:stage1: unknown setting\(s\) batchsize"),
    "stage1_batch_size_as_text": (_prof_edit(lambda d: d["stage1"].update(batch_size="4")),
                                  r"profile rel1:stage1: batch_size must be int"),
    "stage1_seed_negative": (_prof_edit(lambda d: d["stage1"].update(seed=-1)),
                             r"profile rel1:stage1: seed must be an integer in 0"),
    "stage1_batch_size_0": (_prof_edit(lambda d: d["stage1"].update(batch_size=0)),
                            r"profile rel1:stage1: batch_size must be an integer >= 1"),
}


@pytest.mark.parametrize("name", list(S1_PROFILES))
def test_stage1_profile(world1, tmp_path, capsys, case, name):
    fn, pattern = S1_PROFILES[name]
    case["expected"] = f"exit 2, error naming the profile file / block and key ({pattern}), no folder"
    _, prof = world1.copy(tmp_path)
    fn(prof)
    out = tmp_path / "s1"
    code, err = run_script("run_original_generator", _s1_argv(prof, out), capsys)
    refused(case, code, err, pattern, out)
    assert not out.exists()


def _files(folder: Path) -> dict:
    """The stage's data files (images, latents, labels; not the timings in report / metrics)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and (p.suffix == ".csv" or p.parent.name == "images")}


S1_RESUME = {
    "truncated_image": lambda out: D.truncate(out / "images" / "000005.png"),
    "zero_byte_image": lambda out: D.zero(out / "images" / "000002.png"),
    "corrupt_image": lambda out: D.corrupt(out / "images" / "000007.png"),
    "same_size_changed_image": lambda out: D.flip(out / "images" / "000001.png"),
    "deleted_image": lambda out: (out / "images" / "000004.png").unlink(),
    "deleted_latents": lambda out: (out / "latents.csv").unlink(),
    "deleted_completion_mark": lambda out: (out / "metrics.json").unlink(),
    "stale_temporary_file": lambda out: (out / "images" / ".000003.png.tmp999999").write_bytes(b"half"),
}


@pytest.mark.parametrize("name", list(S1_RESUME))
def test_stage1_resume_repairs(world1, tmp_path, capsys, case, name):
    case["expected"] = "exit 0; the re-run re-checks and regenerates: byte-identical folder, complete"
    _, prof = world1.copy(tmp_path)
    out = tmp_path / "s1"
    code, err = run_script("run_original_generator", _s1_argv(prof, out), capsys)
    assert code == 0, err
    ref = _files(out)
    S1_RESUME[name](out)
    code, err = run_script("run_original_generator", _s1_argv(prof, out), capsys)
    same = _files(out) == ref
    case["observed"] = f"exit {code}; " + ("byte-identical" if same else "DIFFERENT") + \
        ("; complete" if (out / "metrics.json").is_file() else "; NOT complete")
    assert code == 0 and same and (out / "metrics.json").is_file(), err
    lineage.verify(out, "x", deep=True)


S1_REFUSED_RESUME = {
    "other_thread_count": (["--threads", "2"], ["--threads", "1"], r"threads: folder has 2, this run 1"),
    "other_seed": ([], ["--seed", "5"], r"seed: folder has 0, this run 5"),
    "other_batch_size": ([], ["--batch-size", "2"], r"batch_size: folder has 4, this run 2"),
}


@pytest.mark.parametrize("name", list(S1_REFUSED_RESUME))
def test_stage1_resume_with_other_settings_is_refused(world1, tmp_path, capsys, case, name):
    first, second, pattern = S1_REFUSED_RESUME[name]
    case["expected"] = "exit 2 naming the differing setting; the finished folder stays complete and unchanged"
    _, prof = world1.copy(tmp_path)
    out = tmp_path / "s1"
    code, err = run_script("run_original_generator", _s1_argv(prof, out, first), capsys)
    assert code == 0, err
    ref = _files(out)
    code, err = run_script("run_original_generator", _s1_argv(prof, out, second), capsys)
    intact = _files(out) == ref and (out / "metrics.json").is_file()
    case["observed"] = f"exit {code}; {err.splitlines()[-1][:160]}; " + ("folder intact" if intact else "FOLDER CHANGED")
    assert code == 2 and re.search(pattern, err) and intact, err


# ==================================================================================== stage 2

def _swap_same_size(a: Path, b: Path) -> None:
    """Replace ``a`` by a valid image of other content (``b``'s bytes)."""
    a.write_bytes(b.read_bytes())


S2_CASES = {
    # hand-label files
    "labels_missing_column": (lambda r: D.csv_edit(r / QG, D.drop_col("gender")), r"quality_and_gender\.csv.*gender"),
    "labels_text_cell": (lambda r: D.csv_edit(r / QG, D.cell("gender", 3, "yes")),
                         r"quality_and_gender\.csv, row 4.*'gender'"),
    "labels_value_2": (lambda r: D.csv_edit(r / QG, D.cell("quality", 4, "2")), r"quality_and_gender\.csv, row 5.*'quality'"),
    "labels_nan": (lambda r: D.csv_edit(r / QG, D.cell("gender", 5, "nan")), r"quality_and_gender\.csv, row 6.*'gender'"),
    "labels_empty_cell": (lambda r: D.csv_edit(r / AG, D.cell("age", 6, "")), r"age_and_glass\.csv, row 7.*'age'"),
    "labels_duplicate_row": (lambda r: D.csv_edit(r / QG, D.dup_row(2)), r"quality_and_gender\.csv.*img_name.*\b2\b"),
    "labels_unknown_image": (lambda r: D.csv_edit(r / QG, D.cell("img_name", 6, "999")),
                             r"quality_and_gender\.csv, row 7.*img_name.*999"),
    "labels_zero_byte": (lambda r: D.zero(r / QG), r"quality_and_gender\.csv"),
    "labels_cut_mid_line": (lambda r: D.csv_cut(r / AG), r"age_and_glass\.csv"),
    "labels_files_disagree": (lambda r: D.csv_edit(r / AG, D.drop_row(79)), r"age_and_glass\.csv, column 'img_name': image 79"),
    "labels_file_missing": (lambda r: (r / AG).unlink(), r"age_and_glass\.csv"),
    # stage-1 images
    "image_corrupt": (lambda r: D.corrupt(r / "stage1/images/000100.png"), r"000100\.png cannot be read"),
    "image_zero_byte": (lambda r: D.zero(r / "stage1/images/000101.png"), r"000101\.png cannot be read"),
    "image_truncated": (lambda r: D.truncate(r / "stage1/images/000102.png"), r"000102\.png"),
    "image_wrong_size": (lambda r: D.wrong_size(r / "stage1/images/000103.png"), r"000103\.png has shape \(16, 16, 3\)"),
    "image_missing": (lambda r: (r / "stage1/images/000104.png").unlink(), r"000104\.png is missing"),
    "image_replaced_same_name": (lambda r: _swap_same_size(r / "stage1/images/000105.png", r / "stage1/images/000106.png"),
                                 r"000105\.png changed since stage1 finished; run run_original_generator"),
    # latents.csv
    "latents_nan": (lambda r: D.csv_edit(r / "stage1/latents.csv", D.cell("z_3", 7, "nan")),
                    r"latents\.csv, row 8 \(image 000007\), column 'z_3'"),
    "latents_text": (lambda r: D.csv_edit(r / "stage1/latents.csv", D.cell("z_9", 2, "abc")),
                     r"latents\.csv, row 3 \(image 000002\), column 'z_9'"),
    "latents_duplicate_row": (lambda r: D.csv_edit(r / "stage1/latents.csv", D.dup_row(4)),
                              r"latents\.csv, row 121: image 000004 appears twice"),
    "latents_missing_z_column": (lambda r: D.csv_edit(r / "stage1/latents.csv", D.drop_col("z_5")),
                                 r"latents\.csv, row 0 \(header\): missing column\(s\) z_5"),
    "latents_cut": (lambda r: D.csv_cut(r / "stage1/latents.csv"), r"latents\.csv"),
    "latents_img_no_text": (lambda r: D.csv_edit(r / "stage1/latents.csv", D.cell("img_no", 9, "nine")),
                            r"latents\.csv, row 10: img_no 'nine'"),
    # stage-1 completion and lineage
    "stage1_incomplete": (lambda r: (r / "stage1/metrics.json").unlink(),
                          r"stage1 is incomplete \(no metrics\.json\).*run run_original_generator\.py"),
    "stage1_without_lineage": (lambda r: (r / "stage1/lineage.json").unlink(), r"stage1 has no lineage\.json"),
    "stage1_lineage_garbage": (lambda r: (r / "stage1/lineage.json").write_text("{"), r"stage1/lineage\.json: unreadable"),
}
S2_FLAGS = {
    "folds_1": (["--folds", "1"], r"flag --folds: folds must be an integer >= 2"),
    "gender_min_1.5": (["--gender-min", "1.5"], r"flag --gender-min: gender_min must be a number in \[0, 1\]"),
    "age_max_nan": (["--age-max", "nan"], r"flag --age-max: age_max must be a finite number"),
    "seed_negative": (["--seed", "-1"], r"flag --seed: seed must be"),
    "batch_size_0": (["--batch-size", "0"], r"flag --batch-size: batch_size must be an integer >= 1"),
    "score_batch_size_0": (["--score-batch-size", "0"], r"flag --score-batch-size: score_batch_size must be"),
    "threads_0": (["--threads", "0"], r"flag --threads: threads must be a thread count >= 1"),
    "patience_0": (["--patience", "0"], r"flag --patience: patience must be"),
    "unknown_property": (["--properties", "gender,beard"], r"properties must be distinct names"),
}


@pytest.mark.parametrize("name", list(S2_CASES) + [f"flag_{k}" for k in S2_FLAGS])
def test_stage2_bad_input(world2, tmp_path, capsys, case, name):
    root, prof = world2.copy(tmp_path)
    argv = ["--profile", str(prof), "--no-progress"]
    if name.startswith("flag_"):
        extra, pattern = S2_FLAGS[name[5:]]
        argv += extra
    else:
        fn, pattern = S2_CASES[name]
        fn(root)
    case["expected"] = f"exit 2, error naming file and place ({pattern}), no stage-2 output"
    code, err = run_script("run_cnn", argv, capsys)
    refused(case, code, err, pattern, root / "stage2")
    assert not (root / "stage2").exists()


def _fold_model(root: Path, prof: Path) -> Path:
    """A valid fold model for gender fold 0 at the world's settings (as a killed earlier run left)."""
    import run_cnn
    from cnn.kfold import build_model, model_path
    from pipeline.checkpoint import save_checkpoint
    from pipeline.config import constants, resolve
    from pipeline.profiles import load_profile
    from stages.filtering import fold_settings
    p = load_profile(str(prof))
    s = fold_settings(resolve(constants(vars(run_cnn)), p, "stage2", {}, print_fn=None).values, "gender",
                      int(p["resolution"]))
    path = model_path(root / "stage2" / "cnn" / "models", "gender", 0)
    save_checkpoint(build_model(s).state_dict(), path)
    return path


class _Code:
    """Not a tensor: a pickle of it needs code, which weights_only refuses."""


S2_CHECKPOINTS = {
    "garbage_bytes": (lambda p: p.write_bytes(b"PK\x03\x04 not a checkpoint"), r"cannot read checkpoint .*gender_model_0\.pt"),
    "zero_byte": (lambda p: D.zero(p), r"gender_model_0\.pt"),
    "wrong_shape": (lambda p: D.state_edit(p, lambda s: {**s, D.first_key(s): s[D.first_key(s)][:1]}),
                    r"gender model .*gender_model_0\.pt.*mis-shaped keys"),
    "missing_key": (lambda p: D.state_edit(p, lambda s: {k: v for k, v in s.items() if k != D.first_key(s)}),
                    r"gender model .*gender_model_0\.pt.*missing keys"),
    "renamed_key": (lambda p: D.state_edit(p, lambda s: {("x" + k if k == D.first_key(s) else k): v for k, v in s.items()}),
                    r"gender model .*gender_model_0\.pt.*unexpected keys: x"),
    "nan_weights": (lambda p: D.state_edit(p, lambda s: {**s, D.first_key(s): s[D.first_key(s)] * float("nan")}),
                    r"gender model .*gender_model_0\.pt: non-finite values"),
    "pickled_code": (lambda p: __import__("torch").save({"x": _Code()}, p), r"cannot read checkpoint .*gender_model_0\.pt"),
}


@pytest.mark.parametrize("name", list(S2_CHECKPOINTS))
def test_stage2_bad_checkpoint(world2, tmp_path, capsys, case, name):
    fn, pattern = S2_CHECKPOINTS[name]
    case["expected"] = f"exit 2, error naming the checkpoint and keys ({pattern}); nothing else written"
    root, prof = world2.copy(tmp_path)
    path = _fold_model(root, prof)
    fn(path)
    before = partial_outputs(root / "stage2")
    code, err = run_script("run_cnn", ["--profile", str(prof), "--no-progress"], capsys)
    refused(case, code, err, pattern, root / "stage2", before)


# ==================================================================================== stages 3 and 4

def _first(root: Path) -> int:
    return min(int(p.stem) for p in (root / "stage2" / "filtered").glob("*.png"))


def _second(root: Path) -> int:
    return sorted(int(p.stem) for p in (root / "stage2" / "filtered").glob("*.png"))[1]


def _img(root: Path, n: int) -> Path:
    return root / "stage2" / "filtered" / f"{n:06d}.png"


S3_CASES = {
    "input_corrupt": (lambda r: D.corrupt(_img(r, _first(r))), r"filtered/\d{6}\.png cannot be decoded"),
    "input_zero_byte": (lambda r: D.zero(_img(r, _first(r))), r"filtered/\d{6}\.png cannot be decoded"),
    "input_truncated": (lambda r: D.truncate(_img(r, _first(r))), r"filtered/\d{6}\.png"),
    "input_wrong_size": (lambda r: D.wrong_size(_img(r, _first(r))), r"filtered/\d{6}\.png has shape \(16, 16, 3\)"),
    "input_folder_missing": (lambda r: shutil.rmtree(r / "stage2" / "filtered"), r"stage2/filtered not found; run stage 2"),
    "input_folder_empty": (lambda r: [p.unlink() for p in (r / "stage2" / "filtered").glob("*.png")],
                           r"holds no NNNNNN\.png images"),
    "input_replaced_same_name": (lambda r: _swap_same_size(_img(r, _first(r)), _img(r, _second(r))),
                                 r"filtered/\d{6}\.png changed since stage2 finished; run run_cnn\.py"),
    "latents_nan": (lambda r: D.csv_edit(r / "stage1/latents.csv", D.cell("z_3", _first(r), "nan")),
                    r"latents\.csv, row \d+ \(image \d{6}\), column 'z_3'"),
    "latents_text": (lambda r: D.csv_edit(r / "stage1/latents.csv", D.cell("z_7", _first(r), "x")),
                     r"latents\.csv, row \d+ \(image \d{6}\), column 'z_7'"),
    "latents_duplicate": (lambda r: D.csv_edit(r / "stage1/latents.csv", D.dup_row(_first(r))), r"latents\.csv, row \d+: image \d{6} appears twice"),
    "latents_missing_column": (lambda r: D.csv_edit(r / "stage1/latents.csv", D.drop_col("z_5")), r"latents\.csv, row 0 \(header\): missing column\(s\) z_5"),
    "latents_missing_row": (lambda r: D.csv_edit(r / "stage1/latents.csv", D.drop_row(_first(r))), r"latents\.csv has no row for image \d{6}"),
    "stage2_incomplete": (lambda r: (r / "stage2/metrics.json").unlink(), r"stage2 is incomplete \(no metrics\.json\).*run run_cnn\.py"),
    "stage1_incomplete": (lambda r: (r / "stage1/metrics.json").unlink(), r"stage1 is incomplete .*run run_original_generator\.py"),
    "stage2_made_from_other_stage1": (lambda r: ((r / "stage1/notes.txt").write_text("a new stage-1 run"),
                                                 lineage.seal(r / "stage1")),
                                      r"stage2 was made from another stage1 than the one there now; run run_cnn\.py"),
}
S3_FLAGS = {
    "batch_size_0": (["--batch-size", "0"], r"flag --batch-size: batch_size must be an integer >= 1"),
    "max_images_negative": (["--max-images", "-1"], r"flag --max-images: max_images must be an integer >= 0"),
    "on_no_face_unknown": (["--on-no-face", "guess"], r"on_no_face must be one of"),
    "threads_0": (["--threads", "0"], r"flag --threads: threads must be a thread count >= 1"),
}
S3_PROFILES = {
    "no_segmentation_block": (lambda d: d.pop("segmentation"), r"has no 'segmentation' block"),
    "unknown_backend": (lambda d: d["segmentation"].update(backend="magic"), r"unknown backend 'magic'"),
    "checkpoint_missing": (lambda d: d["segmentation"].update(checkpoint="/nowhere/seg.pth"), r"/nowhere/seg\.pth"),
    "segmentation_batch_size_text": (lambda d: d["segmentation"].update(batch_size="4"),
                                     r"profile rel34:segmentation: batch_size must be int"),
}


@pytest.mark.parametrize("name", list(S3_CASES) + [f"flag_{k}" for k in S3_FLAGS] + [f"profile_{k}" for k in S3_PROFILES])
def test_stage3_bad_input(world34, tmp_path, capsys, case, name):
    root, prof = world34.copy(tmp_path)
    out = tmp_path / "s3"
    argv = ["--profile", str(prof), "--out", str(out), "--no-progress"]
    if name.startswith("flag_"):
        extra, pattern = S3_FLAGS[name[5:]]
        argv += extra
    elif name.startswith("profile_"):
        fn, pattern = S3_PROFILES[name[8:]]
        _prof_edit(fn)(prof)
    else:
        fn, pattern = S3_CASES[name]
        fn(root)
    case["expected"] = f"exit 2, error naming file and place ({pattern}), no stage-3 output"
    code, err = run_script("run_segmentation", argv, capsys)
    refused(case, code, err, pattern, out)
    assert not (out / "metrics.json").exists()


def _seg(root: Path, kind: str, n: int) -> Path:
    return root / "stage3" / "segmentation_results" / f"{kind}_{n:06d}.png"


def _reseal(root: Path, stage: str) -> None:
    """As a finished re-run of ``stage`` would leave it (for faults that a stage itself wrote)."""
    lineage.seal(root / stage)


S4_CASES = {
    "parsing_truncated": (lambda r: D.truncate(_seg(r, "parsing", _first(r))), r"parsing file .*parsing_\d{6}\.png is truncated"),
    "parsing_zero_byte": (lambda r: D.zero(_seg(r, "parsing", _first(r))), r"parsing file .*parsing_\d{6}\.png is not a PNG"),
    "parsing_garbage": (lambda r: _seg(r, "parsing", _first(r)).write_bytes(b"garbage" * 20), r"parsing_\d{6}\.png is not a PNG"),
    "parsing_flipped_byte": (lambda r: D.flip(_seg(r, "parsing", _first(r))), r"parsing_\d{6}\.png is corrupt \(CRC"),
    "parsing_rgb": (lambda r: D.wrong_size(_seg(r, "parsing", _first(r)), 224), r"parsing_\d{6}\.png must be a single-channel"),
    "parsing_wrong_size": (lambda r: D.grey_map(_seg(r, "parsing", _second(r)), 3, 100), r"parsing_\d{6}\.png is 100x100; expected 224x224"),
    "parsing_class_out_of_range": (lambda r: (D.grey_map(_seg(r, "parsing", _first(r)), 13), _reseal(r, "stage3")),
                                   r"parsing_\d{6}\.png: class id 13 at row 0, column 0"),
    "parsing_missing": (lambda r: _seg(r, "parsing", _first(r)).unlink(), r"parsing file .*parsing_\d{6}\.png is missing"),
    "face_missing": (lambda r: _seg(r, "face", _first(r)).unlink(), r"face file .*face_\d{6}\.png is missing"),
    "face_wrong_size": (lambda r: D.wrong_size(_seg(r, "face", _first(r)), 64), r"face_\d{6}\.png"),
    "true_mask_missing": (lambda r: _seg(r, "true_mask", _first(r)).unlink(), r"true_mask file .*true_mask_\d{6}\.png is missing"),
    "parsing_replaced_same_name": (lambda r: _swap_same_size(_seg(r, "parsing", _first(r)), _seg(r, "parsing", _second(r))),
                                   r"parsing_\d{6}\.png changed since stage3 finished; run run_segmentation\.py"),
    "stage3_incomplete": (lambda r: (r / "stage3/metrics.json").unlink(), r"stage3 is incomplete .*run run_segmentation\.py"),
    "stage3_made_from_other_stage2": (lambda r: (_swap_same_size(_img(r, _first(r)), _img(r, _second(r))),
                                                 _reseal(r, "stage2")),
                                      r"stage3 was made from another stage2 than the one there now; run run_segmentation\.py"),
    "stage2_changed_since": (lambda r: _swap_same_size(_img(r, _first(r)), _img(r, _second(r))),
                             r"filtered/\d{6}\.png changed since stage2 finished; run run_cnn\.py"),
    "stage2_incomplete": (lambda r: (r / "stage2/metrics.json").unlink(), r"stage2 is incomplete"),
    "latents_nan": (lambda r: D.csv_edit(r / "stage1/latents.csv", D.cell("z_3", _first(r), "nan")),
                    r"latents\.csv, row \d+ \(image \d{6}\), column 'z_3'"),
    "latents_missing_column": (lambda r: D.csv_edit(r / "stage1/latents.csv", D.drop_col("z_5")), r"latents\.csv, row 0 \(header\): missing column\(s\) z_5"),
    "latents_duplicate": (lambda r: D.csv_edit(r / "stage1/latents.csv", D.dup_row(_first(r))), r"latents\.csv, row \d+: image \d{6} appears twice"),
    "latents_missing_row": (lambda r: D.csv_edit(r / "stage1/latents.csv", D.drop_row(_first(r))), r"latents\.csv has no row for image \d{6}"),
}
S4_FLAGS = {
    "batch_size_0": (["--batch-size", "0"], r"flag --batch-size: batch_size must be an integer >= 1"),
    "algorithms_without_v2": (["--algorithms", "v1"], r"algorithms must include 'v2'"),
    "true_masks_unknown": (["--true-masks", "maybe"], r"true_masks must be one of"),
    "examples_negative": (["--examples", "-1"], r"flag --examples: examples must be"),
    "v1_image_unknown": (["--v1-image", "photo"], r"v1_image must be 'face' or 'original'"),
}


@pytest.mark.parametrize("name", list(S4_CASES) + [f"flag_{k}" for k in S4_FLAGS])
def test_stage4_bad_input(world34, tmp_path, capsys, case, name):
    root, prof = world34.copy(tmp_path)
    out = tmp_path / "s4"
    argv = ["--profile", str(prof), "--out", str(out), "--no-progress"]
    if name.startswith("flag_"):
        extra, pattern = S4_FLAGS[name[5:]]
        argv += extra
    else:
        fn, pattern = S4_CASES[name]
        fn(root)
    case["expected"] = f"exit 2, error naming file and place ({pattern}), no stage-4 output"
    code, err = run_script("compute_property_scores_v2", argv, capsys)
    refused(case, code, err, pattern, out)
    assert not (out / "metrics.json").exists()


# ==================================================================================== stage 5

S4CSV = "stage4/all_scores_v2.csv"


def _kept(root: Path, k: int = 0) -> Path:
    return sorted((root / "stage2" / "filtered").glob("*.png"))[k]


S5_CASES = {
    "scores_nan": (lambda r: D.csv_edit(r / S4CSV, D.cell("mouth_score", 3, "nan")), r"all_scores_v2\.csv, row 4, column 'mouth_score'"),
    "scores_text": (lambda r: D.csv_edit(r / S4CSV, D.cell("eyes_score", 2, "open")), r"all_scores_v2\.csv, row 3, column 'eyes_score'"),
    "scores_inf": (lambda r: D.csv_edit(r / S4CSV, D.cell("pose_score", 5, "inf")), r"all_scores_v2\.csv, row 6, column 'pose_score'"),
    "scores_duplicate_row": (lambda r: D.csv_edit(r / S4CSV, D.dup_row(1)), r"all_scores_v2\.csv, row \d+, column 'img_no': image \d+ appears twice"),
    "scores_missing_column": (lambda r: D.csv_edit(r / S4CSV, D.drop_col("hair_color_score")),
                              r"all_scores_v2\.csv, row 0 \(header\): missing column\(s\) hair_color_score"),
    "scores_missing_row": (lambda r: D.csv_edit(r / S4CSV, D.drop_row(0)), r"all_scores_v2\.csv has no row for image \d{6}"),
    "scores_img_no_text": (lambda r: D.csv_edit(r / S4CSV, D.cell("img_no", 4, "four")), r"all_scores_v2\.csv, row 5, column 'img_no'"),
    "scores_zero_byte": (lambda r: D.zero(r / S4CSV), r"all_scores_v2\.csv"),
    "scores_missing": (lambda r: (r / S4CSV).unlink(), r"all_scores_v2\.csv not found"),
    "kept_image_corrupt": (lambda r: D.corrupt(_kept(r)), r"filtered/\d{6}\.png cannot be read"),
    "kept_image_zero_byte": (lambda r: D.zero(_kept(r, 1)), r"filtered/\d{6}\.png cannot be read"),
    "kept_image_wrong_size": (lambda r: D.wrong_size(_kept(r, 2)), r"filtered/\d{6}\.png has shape \(16, 16, 3\)"),
    "kept_image_replaced": (lambda r: _swap_same_size(_kept(r, 3), _kept(r, 4)), r"filtered/\d{6}\.png changed since stage2 finished"),
    "stage4_incomplete": (lambda r: (r / "stage4/metrics.json").unlink(), r"stage4 is incomplete .*compute_property_scores_v2\.py"),
    "stage4_changed_since": (lambda r: (r / S4CSV).write_text((r / S4CSV).read_text() + "\n"),
                             r"all_scores_v2\.csv changed since stage4 finished"),
    "stage1_incomplete": (lambda r: (r / "stage1/metrics.json").unlink(), r"stage1 is incomplete"),
}
S5_FLAGS = {
    "threads_0": (["--threads", "0"], r"flag --threads: threads must be a thread count >= 1"),
    "batch_size_0": (["--batch-size", "0"], r"flag --batch-size: batch_size must be an integer >= 1"),
    "lr_0": (["--lr", "0"], r"flag --lr: lr must be a number > 0"),
    "lr_nan": (["--lr", "nan"], r"flag --lr: lr must be a finite number"),
    "seed_negative": (["--seed", "-1"], r"flag --seed: seed must be"),
    "valid_fraction_1.5": (["--valid-fraction", "1.5"], r"flag --valid-fraction: valid_fraction must be a number in \[0, 1\]"),
    "max_epochs_negative": (["--max-epochs", "-1"], r"flag --max-epochs: max_epochs must be"),
    "relabel_mode_unknown": (["--relabel-mode", "guess"], r"relabel_mode must be one of"),
}


@pytest.mark.parametrize("name", list(S5_CASES) + [f"flag_{k}" for k in S5_FLAGS])
def test_stage5_property_cnn_bad_input(world5, tmp_path, capsys, case, name):
    root, prof = world5.copy(tmp_path)
    out = root / "stage5" / "property_cnn"
    argv = ["--profile", str(prof), "--no-progress", "--no-shipped"]
    if name.startswith("flag_"):
        extra, pattern = S5_FLAGS[name[5:]]
        argv += extra
    else:
        fn, pattern = S5_CASES[name]
        fn(root)
    case["expected"] = f"exit 2, error naming file and place ({pattern}), no stage-5 output"
    code, err = run_script("run_property_score_cnn", argv, capsys)
    refused(case, code, err, pattern, out)
    assert not out.exists() or not (out / "metrics.json").exists()


def _base(root: Path) -> Path:
    return root.parent / "base.pth"          # the world's base generator / discriminator checkpoint


def _base_edit(fn):
    """Change the base checkpoint's generator state dict with ``fn``."""
    def apply(root: Path):
        D.state_edit(_base(root), lambda ck: {**ck, "generator": fn(dict(ck["generator"]))})
    return apply


S5V1_CASES = {
    # a stage 4 that wrote bad labels and finished (resealed): the label reader names the place
    "labels_nan": (lambda r: (D.csv_edit(r / "stage4/all_scores.csv", D.cell("eyes_score", 2, "nan")),
                              _reseal(r, "stage4")), r"all_scores\.csv, row 3, column 'eyes_score'"),
    "labels_changed_since": (lambda r: D.csv_edit(r / "stage4/all_scores.csv", D.cell("eyes_score", 2, "0.5")),
                             r"all_scores\.csv changed since stage4 finished"),
    "labels_missing_column": (lambda r: (D.csv_edit(r / "stage4/all_scores.csv", D.drop_col("pose_score")),
                                         _reseal(r, "stage4")),
                              r"all_scores\.csv, row 0 \(header\): missing column\(s\) pose_score"),
    "stage4_incomplete": (lambda r: (r / "stage4/metrics.json").unlink(), r"stage4 is incomplete"),
    "stage2_incomplete": (lambda r: (r / "stage2/metrics.json").unlink(), r"stage2 is incomplete"),
    "base_checkpoint_garbage": (lambda r: _base(r).write_bytes(b"not a checkpoint"), r"cannot read checkpoint .*base\.pth"),
    "base_checkpoint_no_generator_entry": (lambda r: D.state_edit(_base(r), lambda ck: {"discriminator": ck["discriminator"]}),
                                           r"base\.pth has no 'generator' entry"),
    "base_generator_wrong_shape": (_base_edit(lambda s: {**s, D.first_key(s): s[D.first_key(s)][:1]}), r"mis-shaped keys"),
    "base_generator_missing_key": (_base_edit(lambda s: {k: v for k, v in s.items() if k != D.first_key(s)}),
                                   r"missing keys"),
    "base_generator_nan": (_base_edit(lambda s: {**s, D.first_key(s): s[D.first_key(s)] * float("nan")}),
                           r"non-finite values"),
}
S5V1_FLAGS = {
    "epochs_0": (["--epochs", "0"], r"flag --epochs: epochs must be an integer >= 1"),
    "batch_size_0": (["--batch-size", "0"], r"flag --batch-size: batch_size must be an integer >= 1"),
    "threads_0": (["--threads", "0"], r"flag --threads: threads must be a thread count >= 1"),
    "lr_generator_nan": (["--lr-generator", "nan"], r"flag --lr-generator: lr_generator must be a finite number"),
    "test_n_z_0": (["--test-n-z", "0"], r"flag --test-n-z: n_z must be an integer >= 1"),
}


@pytest.mark.parametrize("name", list(S5V1_CASES) + [f"flag_{k}" for k in S5V1_FLAGS])
def test_stage5_finetune_v1_bad_input(world5, tmp_path, capsys, case, name):
    root, prof = world5.copy(tmp_path)
    out = root / "stage5" / "v1"
    argv = ["--profile", str(prof), "--no-progress", "--no-shipped", "--quick"]
    if name.startswith("flag_"):
        extra, pattern = S5V1_FLAGS[name[5:]]
        argv += extra
    else:
        fn, pattern = S5V1_CASES[name]
        fn(root)
    case["expected"] = f"exit 2, error naming file and place ({pattern}), no FineTune-v1 output"
    code, err = run_script("run_stylegan_fine_tuning_v1", argv, capsys)
    refused(case, code, err, pattern, out)
    assert not (out / "metrics.json").exists()


def test_case_count():
    """The matrix holds at least 100 bad-input and fault cases."""
    n = (len(S1_FLAGS) + len(S1_PROFILES) + len(S1_RESUME) + len(S1_REFUSED_RESUME) + len(S2_CASES) + len(S2_FLAGS)
         + len(S2_CHECKPOINTS) + len(S3_CASES) + len(S3_FLAGS) + len(S3_PROFILES) + len(S4_CASES) + len(S4_FLAGS)
         + len(S5_CASES) + len(S5_FLAGS) + len(S5V1_CASES) + len(S5V1_FLAGS))
    assert n >= 100, n
