"""pipeline.lineage: completion mark, upstream records, verification, refusal of mixed inputs."""
import json

import pytest

from pipeline import lineage
from pipeline.lineage import LineageError


def _stage(tmp_path, name="stage1", content=b"abc", consumed=None):
    d = tmp_path / name
    lineage.begin(d, consumed)
    (d / "a.png").write_bytes(content)
    (d / "b.csv").write_text("x\n1\n")
    rec = lineage.finish(d, ["a.png", "b.csv"], consumed)
    (d / "metrics.json").write_text("{}")
    return d, rec


def test_finished_stage_gives_its_record_and_verifies(tmp_path):
    d, rec = _stage(tmp_path)
    up = lineage.upstream(d, "stage 1", "run_original_generator.py")
    assert up == {"stage": "stage 1", "outputs_digest": rec["outputs_digest"]}
    assert rec["outputs"]["a.png"][0] == 3
    lineage.verify(d, "x", deep=True)


def test_incomplete_upstream_is_refused_with_the_command(tmp_path):
    d, _ = _stage(tmp_path)
    lineage.begin(d)        # a re-run starts: the completion mark goes
    assert not (d / "metrics.json").exists()
    with pytest.raises(LineageError, match=r"stage1 is incomplete.*run run_cnn.py"):
        lineage.upstream(d, "stage 1", "run_cnn.py")


def test_changed_or_missing_outputs_are_named(tmp_path):
    d, _ = _stage(tmp_path)
    (d / "a.png").write_bytes(b"xyz")                 # same size: only the deep check sees it
    lineage.verify(d, "x")
    with pytest.raises(LineageError, match=r"a.png changed since stage1 finished"):
        lineage.verify(d, "x", deep=True)
    (d / "b.csv").unlink()
    with pytest.raises(LineageError, match=r"b.csv is missing"):
        lineage.verify(d, "x", only=["b.csv"])


def test_work_made_from_other_inputs_is_refused_even_when_interrupted(tmp_path):
    up1, r1 = _stage(tmp_path, "up", b"one")
    rec1 = lineage.upstream(up1, "up", "h")
    down = tmp_path / "down"
    lineage.begin(down, {"up": rec1})                 # interrupted: no finish
    assert json.loads((down / "lineage.json").read_text())["state"] == "running"
    lineage.begin(down, {"up": rec1})                 # same inputs: resume is fine
    up2, _ = _stage(tmp_path, "up", b"two")           # the upstream is made again, differently
    rec2 = lineage.upstream(up2, "up", "h")
    assert rec2 != rec1
    with pytest.raises(LineageError, match=r"down was made from another up.*--restart"):
        lineage.begin(down, {"up": rec2}, "re-run with --restart")


def test_digest_depends_on_content_and_names(tmp_path):
    a = {"x.png": [3, "aa"], "y.png": [3, "bb"]}
    assert lineage.digest(a) == lineage.digest(dict(reversed(list(a.items()))))
    assert lineage.digest(a) != lineage.digest({"x.png": [3, "bb"], "y.png": [3, "aa"]})


def test_open_and_close_stage_record_inputs_and_write_the_mark_last(tmp_path):
    up, _ = _stage(tmp_path, "up")
    down = tmp_path / "down"
    consumed = lineage.open_stage(down, {"up": (up, "make up")}, files={"labels": up / "b.csv"})
    assert not (down / "metrics.json").exists() and set(consumed) == {"up", "labels"}
    (down / "out.csv").write_text("1\n")
    (down / "cache").mkdir()
    (down / "cache" / "x.json").write_text("{}")
    rec = lineage.close_stage(down, None, {"done": 1}, skip=("cache",))     # None: the records begin wrote
    assert set(rec["outputs"]) == {"out.csv"} and rec["consumed"] == consumed
    assert json.loads((down / "metrics.json").read_text()) == {"done": 1}


def test_upstreams_must_agree_with_each_other(tmp_path):
    s2, _ = _stage(tmp_path, "stage2", b"old")
    r2 = lineage.upstream(s2, "stage2", "h")
    s3, _ = _stage(tmp_path, "stage3", b"maps", consumed={"stage2": r2})
    lineage.check_upstreams({"stage2": (s2, "run 2"), "stage3": (s3, "run 3")})
    _stage(tmp_path, "stage2", b"new")                 # stage 2 made again; stage 3 not
    with pytest.raises(LineageError, match=r"stage3 was made from another stage2 than the one there now; run run 3"):
        lineage.check_upstreams({"stage2": (s2, "run 2"), "stage3": (s3, "run 3")})


def test_seal_marks_a_hand_made_folder_finished(tmp_path):
    d = tmp_path / "made"
    d.mkdir()
    (d / "x.png").write_bytes(b"1234")
    lineage.seal(d)
    assert lineage.upstream(d, "made", "h")["outputs_digest"]
    lineage.verify(d, "h", deep=True)
