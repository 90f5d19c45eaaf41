"""The fault matrix of stage 7 (``run_vectorfind_v9.py``, :mod:`stages.vectorfind`): nonsense flags, a
damaged v9 generator checkpoint, a stale stage-6 run and malformed ``stage7`` profile blocks. Each case
runs the script in this process on a private copy of one tiny world (the stage-5 world plus a sealed
stage-6 run holding a random v9 generator, built once per module) and expects exit 2, an error naming
the file / flag / block and nothing written under ``stage7/``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline import lineage
from tests.reliability import damage as D
from tests.reliability.conftest import partial_outputs, run_script
from tests.reliability.test_faults import refused
from tests.reliability.world import World

T1 = ["--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def world7(tmp_path_factory):
    from pipeline.checkpoint import save_checkpoint
    from stages.bases import build_configs
    from stylegan_modified.v9 import build_v9_generator
    from tests.stage5_world import make_root
    root = tmp_path_factory.mktemp("rel7")
    prof = make_root(root, n=8)
    gcfg, _ = build_configs(prof)
    s6 = prof.data_root / "stage6" / "v9"
    save_checkpoint(build_v9_generator(gcfg, seed=3).state_dict(), s6 / "generator.pth")
    lineage.seal(s6)                                   # a finished stage-6 run, as stage 7 requires
    return World(root, json.loads(json.dumps(dict(prof))))


def _gen(root: Path) -> Path:
    return root / "stage6" / "v9" / "generator.pth"


def _check(case, code, err, pattern, root: Path) -> None:
    refused(case, code, err, pattern, root / "stage7")
    assert not (root / "stage7").exists() or not partial_outputs(root / "stage7")
    assert not list((root / "stage7").rglob("metrics.json")) if (root / "stage7").exists() else True


FLAGS = {
    "method_unknown": (["--method", "lasso"], r"flag --method: method must be one of"),
    "point_unknown": (["--point", "mapping_split9"], r"--point must be one of"),
    "n_0": (["--n", "0"], r"flag --n: n must be an integer >= 1"),
    "cases_negative": (["--cases", "-1"], r"flag --cases: cases must be an integer >= 1"),
    "alpha_scale_nan": (["--alpha-scale", "nan"], r"flag --alpha-scale: alpha_scale must be a finite number"),
    "alpha_scale_negative": (["--alpha-scale", "-2"], r"flag --alpha-scale: alpha_scale must be a finite number > 0"),
    "ratio_0": (["--ratio", "0"], r"flag --ratio: ratio must be a share in \(0, 0\.5\]"),
    "ratio_above_half": (["--ratio", "0.6"], r"flag --ratio: ratio must be a share in \(0, 0\.5\]"),
    "batch_size_0": (["--batch-size", "0"], r"flag --batch-size: batch_size must be an integer >= 1"),
    "image_batch_0": (["--image-batch", "0"], r"flag --image-batch: image_batch must be an integer >= 1"),
    "workers_0": (["--workers", "0"], r"flag --workers: workers must be an integer >= 1"),
    "inference_path_unknown": (["--inference-path", "fast"], r"--inference-path must be one of"),
    "fit_judge_unknown": (["--fit-judge", "parsing"], r"fit judge must be property_cnn or evaluator"),
    "rng_order_unknown": (["--rng-order", "shuffled"], r"--rng-order must be seeded or original"),
    "threads_0": (["--threads", "0"], r"flag --threads: threads must be a thread count >= 1"),
}


@pytest.mark.parametrize("name", list(FLAGS))
def test_stage7_flag_refused(world7, tmp_path, capsys, case, name):
    extra, pattern = FLAGS[name]
    case["expected"] = f"stage 7 with a nonsense flag: exit 2, error naming it ({pattern}), nothing under stage7/"
    root, prof = world7.copy(tmp_path)
    code, err = run_script("run_vectorfind_v9", ["--profile", str(prof), *T1, *extra], capsys)
    _check(case, code, err, pattern, root)


def _resealed(fn):
    return D.resealed(fn, "stage6/v9")


GEN_BAD = {
    "missing": (lambda r: _gen(r).unlink(), [], r"v9 generator \S+stage6/v9/generator\.pth not found"),
    "corrupt": (_resealed(lambda r: D.truncate(_gen(r))), [], r"stage6/v9/generator\.pth"),
    "nan": (_resealed(lambda r: D.state_edit(_gen(r), D.nan_weight)), [], r"generator\.pth.*non-finite"),
    "wrong_shape": (_resealed(lambda r: D.state_edit(_gen(r), D.wrong_shape)), [], r"generator\.pth.*mis-shaped"),
    "missing_key": (_resealed(lambda r: D.state_edit(_gen(r), D.missing_key)), [], r"generator\.pth.*missing keys"),
    "key_absent": (lambda r: None, ["--generator-key", "g_ema"], r"generator\.pth.*'g_ema'"),
    "outside_file_missing": (lambda r: None, ["--generator", "/nonexistent/v9.pth"],
                             r"v9 generator /nonexistent/v9\.pth not found"),
}
STALE = {
    "stage6_incomplete": (lambda r: (r / "stage6/v9/metrics.json").unlink(),
                          r"v9 is incomplete .*run_stylegan_finetune_v9\.py"),
    "generator_edited": (lambda r: D.state_edit(_gen(r), lambda s: {**s, D.first_key(s): s[D.first_key(s)] + 1}),
                         r"generator\.pth changed since v9 finished"),
    "stage6_lineage_missing": (lambda r: (r / "stage6/v9/lineage.json").unlink(), r"v9 has no lineage\.json"),
}


def _block(fn):
    def go(prof: Path):
        p = json.loads(prof.read_text())
        fn(p.setdefault("stage7", {}))
        prof.write_text(json.dumps(p))
    return go


PROFILE_BAD = {
    "unknown_key": (_block(lambda b: b.update(alpha=2.0)), r"profile \S+:stage7: unknown setting\(s\) alpha"),
    "n_text": (_block(lambda b: b.update(n="many")), r"profile \S+:stage7: n must be int"),
    "alpha_scale_negative": (_block(lambda b: b.update(alpha_scale=-1.0)),
                             r"profile \S+:stage7: alpha_scale must be a finite number > 0"),
    "ratio_above_half": (_block(lambda b: b.update(ratio=0.75)), r"profile \S+:stage7: ratio must be a share"),
    "cases_0": (_block(lambda b: b.update(cases=0)), r"profile \S+:stage7: cases must be an integer >= 1"),
}


@pytest.mark.parametrize("name", [f"generator_{k}" for k in GEN_BAD] + [f"stale_{k}" for k in STALE]
                         + [f"profile_{k}" for k in PROFILE_BAD])
def test_stage7_inputs_refused(world7, tmp_path, capsys, case, name):
    root, prof = world7.copy(tmp_path)
    extra = []
    if name.startswith("generator_"):
        fn, extra, pattern = GEN_BAD[name[10:]]
        fn(root)
    elif name.startswith("stale_"):
        fn, pattern = STALE[name[6:]]
        fn(root)
    else:
        fn, pattern = PROFILE_BAD[name[8:]]
        fn(prof)
    case["expected"] = f"stage 7 with {name.replace('_', ' ')}: exit 2, error naming it ({pattern}), nothing written"
    code, err = run_script("run_vectorfind_v9", ["--profile", str(prof), *T1, *extra], capsys)
    _check(case, code, err, pattern, root)


def _with_judges(root: Path, prof: Path) -> None:
    """A random-init property CNN in the copy and the repository's evaluator: stage 7 runs to the end."""
    from cnn.property_score_cnn import PropertyScoreCNN
    from evaluation.networks import property_cnn_architecture
    from pipeline.checkpoint import save_checkpoint
    p = json.loads(prof.read_text())
    a = property_cnn_architecture(p)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        save_checkpoint(PropertyScoreCNN(a["resolution"], a["width"], a["padding"], a["head_units"]).state_dict(),
                        root / "stage5/property_cnn/property_score_cnn.pth")
    p["stage5"]["evaluator"] = str(Path(__file__).resolve().parents[2] / "synthface/weights/evaluator.pth")
    prof.write_text(json.dumps(p))


@pytest.mark.reliability_slow
def test_kill_stage7(world7, tmp_path, case):
    from tests.reliability.test_kill import kill_and_rerun
    case["expected"] = ("VectorFind-v9 (tiny world, SVM, n 1000, 3 cases) killed (-9) at 3 random moments, re-run: "
                        "byte-identical vector, test and per-case CSVs, complete, lineage verifies")
    roots: dict = {}

    def argv(n):
        if n not in roots:
            (tmp_path / n).mkdir(parents=True)
            roots[n] = world7.copy(tmp_path / n)
            _with_judges(*roots[n])
        return ["run_vectorfind_v9.py", "--profile", str(roots[n][1]), "--n", "1000", "--median-n", "1000",
                "--cases", "3", "--test-judges", "property_cnn,evaluator", "--no-jpeg", *T1]
    kill_and_rerun(case, argv, lambda n: roots[n][0] / "stage7" / "runs" / "svm_mapping_split2_n1000_x1",
                   ["property_score_vectors/*.csv", "image_generation_report/*.csv",
                    "inference_test_after_training/*/*.csv"], seed=9)
