"""The fault matrix of stage 5's later parts: the oracle (``run_oracle.py``), the shipped-run install
(``pipeline/shipped.py`` through FineTune-v1 and the property CNN), the generation test of a chosen
checkpoint (``run_fine_tuned_generator.py``) and FineTune-v3's per-epoch test, and the thread count
recorded on resume. Each case runs the script in this process on a private copy of a tiny world whose
property CNN, FineTune-v1 and v3 are trained and packed as shipped runs (built once per session).
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from pipeline import lineage
from tests.reliability import damage as D
from tests.reliability.conftest import run_script
from tests.reliability.test_faults import refused

T1 = ["--threads", "1", "--no-progress"]


def _copy(world, tmp_path) -> tuple[Path, Path]:
    return world.copy(tmp_path)


def _shown(err: str) -> str:
    return (err.splitlines() or ["(none)"])[0][:200]


# ==================================================================================== the oracle

def _oracle(root: Path) -> Path:
    return root / "stage5" / "oracle"


ORACLE_STALE = {
    "property_cnn_incomplete": (lambda r: (r / "stage5/property_cnn/metrics.json").unlink(),
                                r"property_cnn is incomplete .*run_property_score_cnn\.py"),
    "property_cnn_checkpoint_changed": (lambda r: D.flip(r / "stage5/property_cnn/property_score_cnn.pth"),
                                        r"property_score_cnn\.pth changed since property_cnn finished"),
    "property_labels_changed": (lambda r: D.csv_edit(r / "stage5/property_cnn/all_scores_v2_cnn.csv",
                                                     D.cell("eyes_score", 1, "0.25")),
                                r"all_scores_v2_cnn\.csv changed since property_cnn finished"),
    "latents_changed": (lambda r: D.csv_edit(r / "stage1/latents.csv", D.cell("z_3", 2, "0.5")),
                        r"latents\.csv changed since stage1 finished"),
    "stage2_incomplete": (lambda r: (r / "stage2/metrics.json").unlink(), r"stage2 is incomplete"),
    "property_cnn_lineage_missing": (lambda r: (r / "stage5/property_cnn/lineage.json").unlink(),
                                     r"property_cnn has no lineage\.json"),
}
ORACLE_FLAGS = {
    "test_n_z_0": (["--test-n-z", "0"], r"flag --test-n-z: n_z must be an integer >= 1"),
    "test_batch_size_0": (["--test-batch-size", "0"], r"flag --test-batch-size: batch_size must be"),
    "threads_0": (["--threads", "0"], r"flag --threads: threads must be a thread count >= 1"),
    "test_z_seed_negative": (["--test-z-seed", "-1"], r"flag --test-z-seed: z_seed must be"),
}


@pytest.mark.parametrize("name", [f"stale_{k}" for k in ORACLE_STALE] + [f"flag_{k}" for k in ORACLE_FLAGS])
def test_oracle_refused(world5s, tmp_path, capsys, case, name):
    root, prof = _copy(world5s, tmp_path)
    argv = ["--profile", str(prof), *T1]
    if name.startswith("flag_"):
        extra, pattern = ORACLE_FLAGS[name[5:]]
        argv += extra
    else:
        fn, pattern = ORACLE_STALE[name[6:]]
        fn(root)
    case["expected"] = f"oracle: exit 2, error naming the file / flag ({pattern}), no oracle output"
    code, err = run_script("run_oracle", argv, capsys)
    refused(case, code, err, pattern, _oracle(root))


def test_oracle_joins_the_lineage_and_skips_a_finished_test(world5s, tmp_path, capsys, case):
    case["expected"] = ("oracle: lineage.json records stages 1, 2 and the property CNN and verifies; "
                        "a second run is skipped (files untouched); --force and another n_z run again")
    root, prof = _copy(world5s, tmp_path)
    out = _oracle(root)
    code, err = run_script("run_oracle", ["--profile", str(prof), *T1], capsys)
    assert code == 0, err
    rec = json.loads((out / "lineage.json").read_text())
    lineage.verify(out, "x", deep=True)
    stamp = (out / "metrics.json").stat().st_mtime_ns
    code2, _ = run_script("run_oracle", ["--profile", str(prof), *T1], capsys)
    skipped = (out / "metrics.json").stat().st_mtime_ns == stamp
    code3, _ = run_script("run_oracle", ["--profile", str(prof), *T1, "--test-n-z", "3"], capsys)
    n_z = json.loads((out / "metrics.json").read_text())["n_z"]
    case["observed"] = (f"exit {code}/{code2}/{code3}; consumed {sorted(rec['consumed'])}; second run skipped: "
                        f"{skipped}; --test-n-z 3 re-ran: n_z {n_z}")
    assert sorted(rec["consumed"]) == ["stage1", "stage2", "stage5/property_cnn"]
    assert code2 == 0 and skipped and code3 == 0 and n_z == 3
    lineage.verify(out, "x", deep=True)


def test_oracle_interrupted_then_rerun_is_identical(world5s, tmp_path, capsys, case):
    case["expected"] = ("oracle interrupted (no metrics.json, a half-written table): the re-run tests again "
                        "and ends byte-identical to an uninterrupted run")
    root, prof = _copy(world5s, tmp_path)
    out = _oracle(root)
    run_script("run_oracle", ["--profile", str(prof), *T1], capsys)
    ref = {p.name: p.read_bytes() for p in out.glob("*.csv")}
    (out / "metrics.json").unlink()
    D.csv_cut(out / "result_each_z.csv")
    code, err = run_script("run_oracle", ["--profile", str(prof), *T1], capsys)
    now = {p.name: p.read_bytes() for p in out.glob("*.csv")}
    case["observed"] = f"exit {code}; CSVs identical: {now == ref}; complete: {(out / 'metrics.json').is_file()}"
    assert code == 0 and now == ref and (out / "metrics.json").is_file()


def test_oracle_reruns_when_its_upstream_was_made_again(world5s, tmp_path, capsys, case):
    case["expected"] = "oracle finished, then the property CNN made again (new record): the oracle tests again"
    root, prof = _copy(world5s, tmp_path)
    out = _oracle(root)
    run_script("run_oracle", ["--profile", str(prof), *T1], capsys)
    stamp = (out / "metrics.json").stat().st_mtime_ns
    D.csv_edit(root / "stage5/property_cnn/all_scores_v2_cnn.csv", D.cell("eyes_score", 1, "0.25"))
    lineage.seal(root / "stage5/property_cnn", json.loads((root / "stage5/property_cnn/lineage.json")
                                                          .read_text())["consumed"])
    code, err = run_script("run_oracle", ["--profile", str(prof), *T1], capsys)
    again = (out / "metrics.json").stat().st_mtime_ns != stamp
    case["observed"] = f"exit {code}; tested again: {again}"
    assert code == 0 and again
    lineage.verify(out, "x", deep=True)


# ==================================================================================== shipped-run install

def _fresh_v1(root: Path) -> Path:
    shutil.rmtree(root / "stage5" / "v1")
    return root / "stage5" / "v1"


def _shipped(root: Path) -> Path:
    return root.parent / "shipped"


def _v1(prof, capsys, extra=()):
    return run_script("run_stylegan_fine_tuning_v1", ["--profile", str(prof), *T1, *extra], capsys)


SHIPPED_BAD = {
    "file_damaged": (lambda s: (s / "v1/train_steps.csv").write_text((s / "v1/train_steps.csv").read_text() + "x"),
                     r"shipped run file .*v1/train_steps\.csv does not match its sha256"),
    "partial_checkpoint_flipped": (lambda s: D.flip(s / "v1/generator.pth.partial.pth"),
                                   r"generator\.pth\.partial\.pth does not match its sha256"),
    "file_missing": (lambda s: (s / "v1/train_steps.csv").unlink(), r"shipped run file missing: .*train_steps\.csv"),
    "manifest_not_json": (lambda s: (s / "v1/shipped.json").write_text("{not json"),
                          r"shipped run manifest .*v1/shipped\.json is not valid JSON"),
    "manifest_other_format": (lambda s: D.json_edit(s / "v1/shipped.json", lambda m: {**m, "format": 99}),
                              r"shipped\.json: format 99, expected 1"),
}


@pytest.mark.parametrize("name", list(SHIPPED_BAD))
def test_shipped_install_damaged(world5s, tmp_path, capsys, case, name):
    fn, pattern = SHIPPED_BAD[name]
    case["expected"] = f"FineTune-v1 install from a damaged shipped run: exit 2, error naming it ({pattern}), no run"
    root, prof = _copy(world5s, tmp_path)
    out = _fresh_v1(root)
    fn(_shipped(root))
    code, err = _v1(prof, capsys)
    refused(case, code, err, pattern, out)


def _base_bias(root: Path) -> None:
    D.state_edit(root.parent / "base.pth", lambda ck: {**ck, "generator": {
        **ck["generator"], "mapping.dense0.bias": ck["generator"]["mapping.dense0.bias"] + 1.0}})


def _kept_set(images_delta):
    def fn(root: Path, n: int):
        D.json_edit(_shipped(root) / "v1/shipped.json", lambda m: (m["settings"].update(
            images=n + images_delta(n), img_nos_sha256="0" * 64), m.pop("img_nos", None), m)[-1])
    return fn


SHIPPED_TRAINS = {
    # (damage(root, images), extra flags, expected words in the output, trained?)
    "base_sha256_differs": (lambda r, n: _base_bias(r), [], "fine-tuned from another", True),
    "settings_differ": (lambda r, n: None, ["--seed", "5"], "other settings (seed)", True),
    "kept_set_within_tolerance": (_kept_set(lambda n: 1), [], "note: the shipped", False),
    "kept_set_beyond_tolerance": (_kept_set(lambda n: n), [], "training instead", True),
    "no_shipped_flag": (lambda r, n: None, ["--no-shipped"], "", True),
    "installs_when_all_match": (lambda r, n: None, [], "installed the shipped", False),
}


@pytest.mark.parametrize("name", list(SHIPPED_TRAINS))
def test_shipped_install_or_train(world5s, tmp_path, capsys, case, name):
    fn, extra, words, trains = SHIPPED_TRAINS[name]
    case["expected"] = (f"FineTune-v1 with a shipped run whose {name.replace('_', ' ')}: exit 0, "
                        f"{'trains' if trains else 'installs (no training)'}" + (f", says {words!r}" if words else ""))
    root, prof = _copy(world5s, tmp_path)
    out = _fresh_v1(root)
    n = len(list((root / "stage2" / "filtered").glob("*.png")))
    fn(root, n)
    from pipeline.entry import guarded
    import run_stylegan_fine_tuning_v1 as script
    capsys.readouterr()
    guarded(script.main, ["--profile", str(prof), *T1, *extra])
    said = capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    case["observed"] = f"exit 0; trained_this_run {m['trained_this_run']}; output says {words!r}: {words in said}"
    assert m["trained_this_run"] == trains and words in said
    if name == "kept_set_within_tolerance":
        assert m["shipped_install"]["kept_set"] == "differs"
    lineage.verify(out, "x", deep=True)


# ==================================================================================== the generation test

def _final(root: Path) -> Path:
    return root / "stage5" / "final"


def _gen_argv(prof, root, extra=()):
    return ["--profile", str(prof), "--version", "v1", "--z-file", str(root / "stage5/v3/test_z_vector.csv"),
            "--copies", "1", "--threads", "1", *extra]


GEN_FLAGS = {
    "copies_negative": (["--copies", "-1"], r"flag --copies: copies must be"),
    "noise_scale_nan": (["--noise-scale", "nan"], r"flag --noise-scale: noise_scale must be a finite number"),
    "z_index_negative": (["--z-index", "-1"], r"--z-index -1 is out of range|flag --z-index: z_index must be"),
    "z_index_past_the_file": (["--z-index", "99"], r"--z-index 99 is out of range: .*test_z_vector\.csv holds 1"),
    "label_not_a_number": (["--label", "eyes=open"], r"--label"),
    "label_unknown_name": (["--label", "nose=1"], r"--label.*nose"),
    "version_unknown": (["--version", "v7"], r"v7"),
    "test_batch_size_0": (["--test-batch-size", "0"], r"flag --test-batch-size: batch_size must be"),
    "threads_0": (["--threads", "0"], r"flag --threads: threads must be a thread count >= 1"),
}
def _outside(name: str, fn):
    """Damage a copy of the run's file outside the stage folders, given with ``--checkpoint`` / ``--z-file``
    (inside the stage folder the lineage check names the change first: the ``stale_`` cases)."""
    def apply(root: Path) -> list[str]:
        src = root / ("stage5/v1/generator.pth" if name == "checkpoint" else "stage5/v3/test_z_vector.csv")
        dst = root.parent / ("g.pth" if name == "checkpoint" else "z.csv")
        shutil.copyfile(src, dst)
        fn(dst)
        return [f"--{name.replace('_', '-')}", str(dst)]
    return apply


GEN_FILES = {
    "checkpoint_missing": (lambda r: [(r / "stage5/v1/generator.pth").unlink()] and [], r"generator\.pth"),
    "checkpoint_garbage": (_outside("checkpoint", lambda p: p.write_bytes(b"not a checkpoint")),
                           r"cannot read checkpoint .*g\.pth"),
    "checkpoint_truncated": (_outside("checkpoint", D.truncate), r"g\.pth"),
    "checkpoint_wrong_shape": (_outside("checkpoint", lambda p: D.state_edit(p, lambda s: {
        **s, D.first_key(s): s[D.first_key(s)][:1]})), r"mis-shaped keys"),
    "checkpoint_missing_key": (_outside("checkpoint", lambda p: D.state_edit(p, lambda s: {
        k: v for k, v in s.items() if k != D.first_key(s)})), r"missing keys"),
    "checkpoint_nan": (_outside("checkpoint", lambda p: D.state_edit(p, lambda s: {
        **s, D.first_key(s): s[D.first_key(s)] * float("nan")})), r"non-finite values"),
    "z_file_nan": (_outside("z_file", lambda p: D.csv_edit(p, D.cell("z_0", 0, "nan"))), r"z\.csv, row 1, column 'z_0'"),
    "z_file_text": (_outside("z_file", lambda p: D.csv_edit(p, D.cell("z_1", 0, "big"))), r"z\.csv, row 1, column 'z_1'"),
    "z_file_missing_column": (_outside("z_file", lambda p: D.csv_edit(p, lambda df: df.iloc[:, :-1])), r"z\.csv"),
    "z_file_missing": (lambda r: [(r / "stage5/v3/test_z_vector.csv").unlink()] and [], r"test_z_vector\.csv"),
    "stale_run_incomplete": (lambda r: [(r / "stage5/v1/metrics.json").unlink()] and [], r"v1 is incomplete"),
    "stale_checkpoint_changed_since": (lambda r: [D.flip(r / "stage5/v1/generator.pth")] and [],
                                       r"generator\.pth changed since v1 finished"),
    "stale_z_file_changed_since": (lambda r: [D.csv_edit(r / "stage5/v3/test_z_vector.csv", D.cell("z_0", 0, "nan"))]
                                   and [], r"test_z_vector\.csv changed since v3 finished"),
}


@pytest.mark.parametrize("name", [f"flag_{k}" for k in GEN_FLAGS] + list(GEN_FILES))
def test_generation_test_refused(world5s, tmp_path, capsys, case, name):
    root, prof = _copy(world5s, tmp_path)
    if name.startswith("flag_"):
        extra, pattern = GEN_FLAGS[name[5:]]
    else:
        fn, pattern = GEN_FILES[name]
        extra = fn(root)
    case["expected"] = f"run_fine_tuned_generator: exit 2, error naming the file / flag ({pattern}), no output"
    code, err = run_script("run_fine_tuned_generator", _gen_argv(prof, root, extra), capsys)
    refused(case, code, err, pattern, _final(root))


V3_CASES = {
    "property_cnn_garbage": (lambda r: ((r / "stage5/property_cnn/property_score_cnn.pth").write_bytes(b"junk"),
                                        _reseal(r, "stage5/property_cnn")),
                             r"cannot read checkpoint .*property_score_cnn\.pth"),
    "property_cnn_changed_since": (lambda r: D.flip(r / "stage5/property_cnn/property_score_cnn.pth"),
                                   r"property_score_cnn\.pth changed since property_cnn finished"),
    "property_cnn_incomplete": (lambda r: (r / "stage5/property_cnn/metrics.json").unlink(),
                                r"property_cnn is incomplete"),
}
V3_FLAGS = {
    "test_n_z_0": (["--test-n-z", "0"], r"flag --test-n-z: n_z must be an integer >= 1"),
    "test_batch_size_0": (["--test-batch-size", "0"], r"flag --test-batch-size: batch_size must be"),
    "epochs_0": (["--epochs", "0"], r"flag --epochs: epochs must be an integer >= 1"),
}


def _reseal(root: Path, stage: str) -> None:
    rec = json.loads((root / stage / "lineage.json").read_text())
    lineage.seal(root / stage, rec["consumed"])


@pytest.mark.parametrize("name", list(V3_CASES) + [f"flag_{k}" for k in V3_FLAGS])
def test_v3_epoch_test_refused(world5s, tmp_path, capsys, case, name):
    root, prof = _copy(world5s, tmp_path)
    shutil.rmtree(root / "stage5" / "v3")
    if name.startswith("flag_"):
        extra, pattern = V3_FLAGS[name[5:]]
    else:
        (fn, pattern), extra = V3_CASES[name], []
        fn(root)
    case["expected"] = f"FineTune-v3 (per-epoch test): exit 2, error naming the file / flag ({pattern}), no run"
    code, err = run_script("run_stylegan_fine_tuning_v3", ["--profile", str(prof), *T1, "--no-shipped", *extra],
                           capsys)
    refused(case, code, err, pattern, root / "stage5" / "v3")


# ==================================================================================== thread count on resume

def test_v1_resume_under_another_thread_count_is_refused(world5s, tmp_path, capsys, monkeypatch, case):
    case["expected"] = ("FineTune-v1 interrupted under 1 thread, resumed under 2: exit 2, error naming "
                        "train_state.pth and both counts; resumed under 1: finishes")
    from training.gan import GanTrainer
    root, prof = _copy(world5s, tmp_path)
    out = _fresh_v1(root)
    real = GanTrainer.train_step

    def failing(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(GanTrainer, "train_step", lambda self, x, y, epoch, step:
                        failing(self) if step == 2 else real(self, x, y, epoch, step))
    every = ["--no-shipped", "--checkpoint-every", "1"]
    code0, _ = _v1(prof, capsys, every)
    monkeypatch.setattr(GanTrainer, "train_step", real)
    assert (out / "train_state.pth").is_file(), code0
    code, err = run_script("run_stylegan_fine_tuning_v1",
                           ["--profile", str(prof), "--no-progress", "--threads", "2", *every], capsys)
    code2, err2 = _v1(prof, capsys, every)
    case["observed"] = f"interrupted (exit {code0}); under 2 threads: exit {code}; {_shown(err)}; under 1: exit {code2}"
    assert code == 2 and "train_state.pth was made with 1 torch thread(s), this run uses 2" in err
    assert code2 == 0 and (out / "metrics.json").is_file()


def test_stage5_property_cnn_rerun_under_another_thread_count_is_refused(world5s, tmp_path, capsys, case):
    case["expected"] = "property CNN folder made under 1 thread, re-run under 2: exit 2 naming the thread counts"
    root, prof = _copy(world5s, tmp_path)
    code, err = run_script("run_property_score_cnn",
                           ["--profile", str(prof), "--no-shipped", "--no-progress", "--threads", "2"], capsys)
    case["observed"] = f"exit {code}; {_shown(err)}"
    assert code == 2 and re.search(r"threads: folder has 1, this run 2", err), err


def test_stage4_does_not_depend_on_the_thread_count(world34, tmp_path, capsys, case):
    """Stage 4 uses no torch; its OpenCV / numpy work is per pixel: measured equal under 1 and 2 threads."""
    import cv2
    case["expected"] = "stage 4 under 1 and 2 OpenCV / torch threads: byte-identical score CSVs (not recorded)"
    _, prof = world34.copy(tmp_path)
    outs = {}
    n0 = cv2.getNumThreads()
    try:
        for t in (1, 2):
            cv2.setNumThreads(t)
            torch.set_num_threads(t)
            outs[t] = tmp_path / f"t{t}"
            code, err = run_script("compute_property_scores_v2", ["--profile", str(prof), "--out", str(outs[t]),
                                                                  "--no-progress"], capsys)
            assert code == 0, err
    finally:
        cv2.setNumThreads(n0)
    a, b = ({p.name: p.read_bytes() for p in outs[t].glob("*.csv")} for t in (1, 2))
    case["observed"] = f"{len(a)} CSVs; identical: {a == b}"
    assert a and a == b

