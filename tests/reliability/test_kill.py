"""kill -9 at random moments, then the same command again: the folder must end byte-identical to an
uninterrupted run (data files: images, maps, CSVs), complete, and its lineage must verify.

Slow (every run is a fresh process): marked ``reliability_slow``, run by ``make reliability``.
"""
from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import lineage

ROOT = Path(__file__).resolve().parents[2]
KILLS = 3                      # random moments per stage


def _run(argv: list[str], timeout: float = 900) -> tuple[int, float]:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.returncode, time.perf_counter() - t


def _killed(argv: list[str], after: float) -> int:
    """Start the command, SIGKILL it ``after`` seconds later (if still running); its exit code."""
    p = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        p.wait(timeout=after)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    return p.returncode


def _data(folder: Path, patterns) -> dict:
    """Bytes of the data files; a checkpoint (``.pth``) as its tensors (a resumed training holds the same
    values to float tolerance, not the same bytes: the optimiser's sums are split at the interruption)."""
    out = {}
    for pat in patterns:
        for p in sorted(folder.glob(pat)):
            if p.is_file():
                out[p.relative_to(folder).as_posix()] = (_Tensors(p) if p.suffix == ".pth" else p.read_bytes())
    return out


class _Tensors:
    def __init__(self, path: Path):
        import torch
        self.state = torch.load(path, map_location="cpu", weights_only=True)

    def __eq__(self, other) -> bool:
        import torch
        a, b = self.state, getattr(other, "state", None)
        return isinstance(b, dict) and list(a) == list(b) and all(
            torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


def kill_and_rerun(case, argv_for, out_of, patterns, seed: int) -> None:
    """Reference run; then KILLS runs each killed at a random moment and re-run to the end."""
    ref_argv = argv_for("ref")
    _, seconds = _run(ref_argv)
    ref = _data(out_of("ref"), patterns)
    assert ref
    rng = random.Random(seed)
    moments, codes, same = [], [], []
    for k in range(KILLS):
        name = f"k{k}"
        after = round(rng.uniform(0.2, 1.0) * seconds, 2)
        moments.append(after)
        codes.append(_killed(argv_for(name), after))
        _run(argv_for(name))
        out = out_of(name)
        same.append(_data(out, patterns) == ref and (out / "metrics.json").is_file())
        lineage.verify(out, "x", deep=True)
    case["observed"] = (f"uninterrupted {seconds:.1f} s; killed at {moments} s (exit codes {codes}); "
                        f"re-runs byte-identical and complete: {same}")
    assert all(same)


@pytest.mark.reliability_slow
def test_kill_stage1(world1, tmp_path, case):
    case["expected"] = "stage 1 killed (-9) at 3 random moments, re-run: byte-identical images and latents"
    _, prof = world1.copy(tmp_path)
    kill_and_rerun(case, lambda n: ["run_original_generator.py", "--profile", str(prof), "--out", str(tmp_path / n),
                                    "--num-images", "600", "--threads", "1", "--no-progress"],
                   lambda n: tmp_path / n, ["images/*.png", "*.csv"], seed=1)


@pytest.mark.reliability_slow
def test_kill_stage2(world2, tmp_path, case):
    case["expected"] = "stage 2 killed (-9) at 3 random moments, re-run: byte-identical score CSVs and kept images"
    roots = {}

    def argv(n):
        if n not in roots:
            (tmp_path / n).mkdir(parents=True)
            roots[n] = world2.copy(tmp_path / n)
        root, prof = roots[n]
        return ["run_cnn.py", "--profile", str(prof), "--threads", "1", "--no-progress"]
    kill_and_rerun(case, argv, lambda n: roots[n][0] / "stage2",
                   ["cnn/*.csv", "cnn/inference_result/*.csv", "filtered/*.png"], seed=2)


@pytest.mark.reliability_slow
def test_kill_stage3(world34, tmp_path, case):
    case["expected"] = "stage 3 killed (-9) at 3 random moments, re-run: byte-identical maps, crops, true masks"
    _, prof = world34.copy(tmp_path)
    kill_and_rerun(case, lambda n: ["run_segmentation.py", "--profile", str(prof), "--out", str(tmp_path / n),
                                    "--batch-size", "2", "--threads", "1", "--no-progress"],
                   lambda n: tmp_path / n,
                   ["segmentation_results/*.png", "input_sha256.json", "face_detect_failures.json"], seed=3)


@pytest.mark.reliability_slow
def test_kill_stage4(world34, tmp_path, case):
    case["expected"] = "stage 4 killed (-9) at 3 random moments, re-run: byte-identical score CSVs"
    _, prof = world34.copy(tmp_path)
    kill_and_rerun(case, lambda n: ["compute_property_scores_v2.py", "--profile", str(prof), "--out",
                                    str(tmp_path / n), "--batch-size", "2", "--no-progress"],
                   lambda n: tmp_path / n, ["*.csv", "*_norm_stats.json"], seed=4)


@pytest.mark.reliability_slow
def test_kill_stage5_property_cnn(world5, tmp_path, case):
    case["expected"] = "property CNN killed (-9) at 3 random moments, re-run: byte-identical relabelled scores"
    kill_and_rerun(case, lambda n: ["run_property_score_cnn.py", "--profile", str(world5_profile(world5, tmp_path)),
                                    "--out", str(tmp_path / n), "--threads", "1", "--no-shipped", "--no-progress"],
                   lambda n: tmp_path / n, ["all_scores_v2_cnn.csv", "compare/*.csv"], seed=5)


def world5_profile(world5, tmp_path) -> Path:
    """The profile file of one private copy of the stage-5 world (made on first use)."""
    if not (tmp_path / "s5tiny.json").is_file():
        world5.copy(tmp_path)
    return tmp_path / "s5tiny.json"


def _world5s_argv(world5s, tmp_path, script: str, stage: str, roots: dict, extra=()):
    """argv of a private copy of the trained stage-5 world whose ``stage`` run is removed (trains anew)."""
    import shutil

    def argv(n):
        if n not in roots:
            (tmp_path / n).mkdir(parents=True)
            root, prof = world5s.copy(tmp_path / n)
            shutil.rmtree(root / "stage5" / stage)
            roots[n] = (root, prof)
        return [script, "--profile", str(roots[n][1]), "--threads", "1", "--no-shipped", "--no-progress", *extra]
    return argv


@pytest.mark.reliability_slow
def test_kill_stage5_finetune_v1(world5s, tmp_path, case):
    case["expected"] = ("FineTune-v1 (tiny world) killed (-9) at 3 random moments, re-run: the same generator and "
                        "discriminator tensors, byte-identical test CSVs")
    roots: dict = {}
    kill_and_rerun(case, _world5s_argv(world5s, tmp_path, "run_stylegan_fine_tuning_v1.py", "v1", roots),
                   lambda n: roots[n][0] / "stage5" / "v1",
                   ["generator.pth", "discriminator.pth", "generation_test/result_each_z.csv"], seed=6)


@pytest.mark.reliability_slow
def test_kill_stage5_finetune_v3(world5s, tmp_path, case):
    case["expected"] = ("FineTune-v3 (tiny world, per-epoch test) killed (-9) at 3 random moments, re-run: the same "
                        "generator and encoder tensors, byte-identical best latents")
    roots: dict = {}
    kill_and_rerun(case, _world5s_argv(world5s, tmp_path, "run_stylegan_fine_tuning_v3.py", "v3", roots,
                                         ["--select-judge", "primary"]),      # the tiny world has no segmenter
                   lambda n: roots[n][0] / "stage5" / "v3",
                   ["generator.pth", "encoder.pth", "test_z.csv", "test_z_vector.csv"], seed=7)
