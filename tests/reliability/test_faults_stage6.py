"""The fault matrix of stage 6 (``run_stylegan_finetune_v9.py``, :mod:`stages.finetune_v9`): nonsense
flags, a damaged FineTune-v1 checkpoint, stale upstreams and malformed ``stage6.v9`` profile blocks.
Each case runs the script in this process on a private copy of one tiny world (the stage-5 world plus
the stage-2 fold models and a sealed v1 run, built once per module) and expects exit 2, an error
naming the file / flag / block and no output beyond the lineage and settings records.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.reliability import damage as D
from tests.reliability.conftest import run_script
from tests.reliability.test_faults import refused
from tests.reliability.world import World

T1 = ["--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def world6(tmp_path_factory):
    from tests.test_stage6_v9 import _world
    root = tmp_path_factory.mktemp("rel6")
    prof = _world(root)
    return World(root, json.loads(json.dumps(dict(prof))))


def _out(root: Path) -> Path:
    return root / "stage6" / "v9"


FLAGS = {
    "epochs_0": (["--epochs", "0"], r"flag --epochs: epochs must be an integer >= 1"),
    "epochs_negative": (["--epochs", "-3"], r"flag --epochs: epochs must be"),
    "batch_size_0": (["--batch-size", "0"], r"flag --batch-size: batch_size must be an integer >= 1"),
    "start_unknown": (["--start", "sideways"], r"start must be 'original' or 'regress'"),
    "lr_nan": (["--lr", "nan"], r"flag --lr: lr must be a finite number"),
    "checkpoint_every_0": (["--checkpoint-every", "0"], r"flag --checkpoint-every: checkpoint_every must be"),
    "threads_0": (["--threads", "0"], r"flag --threads: threads must be a thread count >= 1"),
    "epochs_text": (["--epochs", "many"], r"argument --epochs: invalid int value: 'many'"),
}


@pytest.mark.parametrize("name", list(FLAGS))
def test_stage6_flag_refused(world6, tmp_path, capsys, case, name):
    extra, pattern = FLAGS[name]
    case["expected"] = f"stage 6 with a nonsense flag: exit 2, error naming it ({pattern}), no output"
    root, prof = world6.copy(tmp_path)
    code, err = run_script("run_stylegan_finetune_v9", ["--profile", str(prof), *T1, *extra], capsys)
    refused(case, code, err, pattern, _out(root))


def _v1_gen(root: Path) -> Path:
    return root / "stage5" / "v1" / "generator.pth"


def _resealed(fn):
    return D.resealed(fn, "stage5/v1")


V1_BAD = {
    # (damage(root), pattern)
    "v1_generator_missing": (_resealed(lambda r: _v1_gen(r).unlink()),
                             r"stage5/v1/generator\.pth not found"),
    "v1_generator_corrupt": (_resealed(lambda r: D.truncate(_v1_gen(r))), r"stage5/v1/generator\.pth"),
    "v1_generator_nan": (_resealed(lambda r: D.state_edit(_v1_gen(r), D.nan_weight)), r"generator\.pth.*(nan|NaN|finite)"),
    "v1_generator_wrong_shape": (_resealed(lambda r: D.state_edit(_v1_gen(r), D.wrong_shape)),
                                 r"generator\.pth.*(shape|size)"),
    "v1_generator_missing_key": (_resealed(lambda r: D.state_edit(_v1_gen(r), D.missing_key)),
                                 r"generator\.pth.*(missing|Missing)"),
    "v1_discriminator_corrupt": (_resealed(lambda r: D.zero(r / "stage5/v1/discriminator.pth")),
                                 r"stage5/v1/discriminator\.pth"),
    "v1_discriminator_missing_key": (_resealed(lambda r: D.state_edit(r / "stage5/v1/discriminator.pth",
                                                                      D.missing_key)),
                                     r"discriminator.*(missing|Missing)"),
}
STALE = {
    "v1_generator_changed": (lambda r: D.flip(_v1_gen(r)), r"generator\.pth changed since v1 finished"),
    "v1_incomplete": (lambda r: (r / "stage5/v1/metrics.json").unlink(),
                      r"v1 is incomplete .*run_stylegan_fine_tuning_v1\.py"),
    "v1_lineage_missing": (lambda r: (r / "stage5/v1/lineage.json").unlink(), r"v1 has no lineage\.json"),
    "stage2_incomplete": (lambda r: (r / "stage2/metrics.json").unlink(), r"stage2 is incomplete"),
}


def _block(fn):
    def go(prof: Path):
        p = json.loads(prof.read_text())
        fn(p.setdefault("stage6", {}).setdefault("v9", {}))
        prof.write_text(json.dumps(p))
    return go


PROFILE_BAD = {
    "unknown_key": (_block(lambda b: b.update(epoks=2)), r"profile \S+:stage6\.v9: unknown setting\(s\) epoks"),
    "epochs_text": (_block(lambda b: b.update(epochs="two")), r"profile \S+:stage6\.v9: epochs must be int"),
    "epochs_0": (_block(lambda b: b.update(epochs=0)), r"profile \S+:stage6\.v9: epochs must be an integer >= 1"),
    "lr_negative": (_block(lambda b: b.update(lr=-1e-4)), r"profile \S+:stage6\.v9: lr must be a number > 0"),
}


@pytest.mark.parametrize("name", [f"v1_{k}" if not k.startswith("v1_") else k for k in V1_BAD]
                         + [f"stale_{k}" for k in STALE] + [f"profile_{k}" for k in PROFILE_BAD])
def test_stage6_inputs_refused(world6, tmp_path, capsys, case, name):
    root, prof = world6.copy(tmp_path)
    if name in V1_BAD:
        fn, pattern = V1_BAD[name]
        fn(root)
    elif name.startswith("stale_"):
        fn, pattern = STALE[name[6:]]
        fn(root)
    else:
        fn, pattern = PROFILE_BAD[name[8:]]
        fn(prof)
    case["expected"] = f"stage 6 with {name.replace('_', ' ')}: exit 2, error naming it ({pattern}), no output"
    code, err = run_script("run_stylegan_finetune_v9", ["--profile", str(prof), *T1], capsys)
    refused(case, code, err, pattern, _out(root))


@pytest.mark.reliability_slow
def test_kill_stage6(world6, tmp_path, case):
    from tests.reliability.test_kill import kill_and_rerun
    case["expected"] = ("FineTune-v9 (tiny world) killed (-9) at 3 random moments, re-run: the same generator and "
                        "discriminator tensors, complete, lineage verifies")
    roots: dict = {}

    def argv(n):
        if n not in roots:
            (tmp_path / n).mkdir(parents=True)
            roots[n] = world6.copy(tmp_path / n)
        return ["run_stylegan_finetune_v9.py", "--profile", str(roots[n][1]), "--acceptance-n", "12", *T1]
    kill_and_rerun(case, argv, lambda n: _out(roots[n][0]), ["generator.pth", "discriminator.pth"], seed=8)
