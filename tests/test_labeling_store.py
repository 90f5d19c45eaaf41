"""The hand-labelling tool without a browser: label store (format, atomic writes, resume, crash
recovery, concurrent writers), the HTTP API (4xx on bad input) and the emulated labeller replay."""
import json
import shutil
import threading
from pathlib import Path

import pandas as pd
import pytest

from pipeline.io import atomic_write_text
from pipeline.profiles import load_profile
from tests.labeling_world import hand_label_settings, make_stage1
from web.labels import LABEL_KEYS, LabelRequestError, LabelStateError, LabelStore
from web.label_format import stage2_label_format

N = 24
QG, AG = "quality_and_gender", "age_and_glass"


@pytest.fixture(scope="module")
def fmt():
    return stage2_label_format()


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    make_stage1(root / "synthface" / "stage1", N, res=16, render=False)
    return root


@pytest.fixture
def data_root(template, tmp_path, monkeypatch):
    root = tmp_path / "data"
    shutil.copytree(template, root)
    monkeypatch.setenv("OHLORA_DATA_ROOT", str(root))
    return root


def files_of(root):
    s1 = root / "synthface" / "stage1"
    return {QG: s1 / "synthesize_results_quality_and_gender.csv", AG: s1 / "synthesize_results_age_and_glass.csv"}


def new_store(root, fmt, **kw):
    return LabelStore(files_of(root), fmt, range(N), **kw)


def label_all(store, n, labels):
    for p, v in labels.items():
        store.set_label(n, p, v)


ONES = {"quality": 1, "gender": 1, "age": 0, "glass": 0}


def test_keys_cover_stage2_columns(fmt):
    cols = [c for g in fmt.groups.values() for c in g]
    assert sorted(cols) == sorted(LABEL_KEYS)
    keys = [k for p in LABEL_KEYS for _, k, _ in LABEL_KEYS[p]]
    assert len(keys) == len(set(keys)) == 8
    assert not set(keys) & {"u", "j"}                 # undo and jump keep their keys


def test_labels_written_in_label_format(data_root, fmt):
    store = new_store(data_root, fmt)
    files = files_of(data_root)
    label_all(store, 3, {"quality": 1, "gender": 0, "age": 1, "glass": 0})
    store.set_label(1, "gender", 1)                       # unfinished: sidecar only
    label_all(store, 0, {"glass": 1, "age": 0, "gender": 1, "quality": 0})
    assert files[QG].read_text() == "img_name,quality,gender\n0,0,1\n3,1,0\n"
    assert files[AG].read_text() == "img_name,age,glass\n0,0,1\n3,1,0\n"
    qg = fmt.read(files[QG], fmt.groups[QG])
    assert qg["img_name"].tolist() == [0, 3] and qg["quality"].tolist() == [0, 1]
    side = json.loads(store.sidecar.read_text())
    assert side["labels"]["1"] == {"gender": 1} and side["order"] == [3, 0] and side["position"] == 0
    assert store.progress() == {"labelled": 2, "total": N, "labelled_all": 2}


def test_resume_keeps_partial_labels_and_position(data_root, fmt):
    store = new_store(data_root, fmt)
    label_all(store, 0, ONES)
    store.set_label(1, "age", 1)
    store.close()
    again = new_store(data_root, fmt)
    assert again.resume()["img_no"] == 1                  # unfinished image where it stopped
    assert again.view(1)["labels"] == {"age": 1}
    label_all(again, 1, {"quality": 0, "gender": 1, "glass": 1})
    assert again.resume()["img_no"] == 2
    assert fmt.read(files_of(data_root)[AG], ("age", "glass"))["img_name"].tolist() == [0, 1]


def test_undo_skip_jump(data_root, fmt):
    store = new_store(data_root, fmt)
    label_all(store, 0, ONES)
    label_all(store, 1, ONES)
    assert store.clear()["img_no"] == 1                   # the last finished image
    assert files_of(data_root)[QG].read_text() == "img_name,quality,gender\n0,1,1\n"
    v = store.skip(1)
    assert v["img_no"] == 2 and store.view(1)["skipped"]
    assert store.next_unlabelled(N - 1) == 2              # wraps, skipped image last
    for n in range(2, N):
        label_all(store, n, ONES)
    assert store.next_unlabelled(5) == 1                  # only the skipped one is left
    label_all(store, 1, ONES)
    assert store.next_unlabelled(0) is None and store.progress()["labelled"] == N
    assert store.goto(7)["img_no"] == 7 and store.resume()["img_no"] == 7
    with pytest.raises(LabelRequestError, match="not a stage-1 image") as e:
        store.goto(N + 5)
    assert e.value.status == 404
    assert store.clear(None)["img_no"] == 1


@pytest.mark.parametrize("img, prop, value, match", [
    (0, "hair", 1, "unknown label 'hair'"), (0, "age", 2, "out of range"), (0, "age", True, "out of range"),
    (0, "age", float("nan"), "out of range"), (0, "age", "1", "out of range"), ("x", "age", 1, "not an integer"),
    (1.5, "age", 1, "not an integer"), (-1, "age", 1, "not a stage-1 image")])
def test_bad_labels_rejected(data_root, fmt, img, prop, value, match):
    store = new_store(data_root, fmt)
    with pytest.raises(LabelRequestError, match=match):
        store.set_label(img, prop, value)
    assert store.labels == {}


def test_kill_between_sidecar_and_csv_recovers(data_root, fmt, monkeypatch):
    store = new_store(data_root, fmt)
    label_all(store, 0, ONES)
    files = files_of(data_root)
    import web.labels as labels_mod
    real = labels_mod.atomic_write_text

    def dying(path, text):                                # the process dies after the sidecar is written
        if Path(path).suffix == ".csv":
            raise KeyboardInterrupt("killed")
        real(path, text)
    monkeypatch.setattr(labels_mod, "atomic_write_text", dying)
    store.set_label(1, "quality", 0)                      # sidecar only: no CSV change, no death
    with pytest.raises(KeyboardInterrupt):
        label_all(store, 1, {"gender": 1, "age": 0, "glass": 0})
    monkeypatch.setattr(labels_mod, "atomic_write_text", real)
    assert files[QG].read_text() == "img_name,quality,gender\n0,1,1\n"       # old, complete file
    (files[QG].parent / f".{files[QG].name}.tmp999999").write_text("img_name,qual")   # a dead writer's leftover
    store.close()
    again = new_store(data_root, fmt)                     # the sidecar holds the label: the CSVs are finished
    assert files[QG].read_text() == "img_name,quality,gender\n0,1,1\n1,0,1\n"
    assert files[AG].read_text() == "img_name,age,glass\n0,0,0\n1,0,0\n"
    assert not list(files[QG].parent.glob(".*.tmp*"))
    assert again.progress()["labelled"] == 2


def test_external_edit_is_refused_then_imported(data_root, fmt):
    store = new_store(data_root, fmt)
    label_all(store, 0, ONES)
    store.set_label(2, "age", 1)
    store.close()
    files = files_of(data_root)
    atomic_write_text(files[QG], "img_name,quality,gender\n0,0,0\n")
    with pytest.raises(LabelStateError, match="changed outside the labelling tool.*--import-files"):
        new_store(data_root, fmt)
    again = new_store(data_root, fmt, import_files=True)
    assert again.view(0)["labels"] == {"quality": 0, "gender": 0, "age": 0, "glass": 0}
    assert again.view(2)["labels"] == {}                  # the sidecar's partial labels are dropped


def test_bad_sidecar_and_foreign_csv_are_clear_errors(data_root, fmt):
    files = files_of(data_root)
    atomic_write_text(files[QG], "img_name,quality,gender\n0,1,1\n99,1,0\n")
    atomic_write_text(files[AG], "img_name,age,glass\n0,0,0\n99,0,0\n")
    with pytest.raises(LabelStateError, match="image 99: not a stage-1 image"):
        new_store(data_root, fmt)
    atomic_write_text(files[QG], "img_name,quality,gender\n0,1,7\n")
    with pytest.raises(fmt.error, match="row 1 .*column 'gender'.*out of range"):
        new_store(data_root, fmt)
    files[QG].unlink()
    files[AG].unlink()
    new_store(data_root, fmt).close()
    sc = files[QG].with_name(files[QG].stem + ".labeling.json")
    sc.write_text("{not json")
    with pytest.raises(LabelStateError, match="not a labelling state file"):
        new_store(data_root, fmt)


def test_two_writers_lose_nothing(data_root, fmt):
    """Two stores (as two servers would) and two threads each on the same files: every label lands."""
    a, b = new_store(data_root, fmt), new_store(data_root, fmt)
    errors = []

    def work(store, images):
        try:
            for n in images:
                label_all(store, n, {**ONES, "glass": n % 2})
        except Exception as exc:                          # surfaced below
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(s, range(k, N, 4))) for k, s in enumerate((a, b, a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ag = fmt.read(files_of(data_root)[AG], ("age", "glass"))
    assert ag["img_name"].tolist() == list(range(N)) and ag["glass"].tolist() == [n % 2 for n in range(N)]
    assert a.progress()["labelled"] == b.progress()["labelled"] == N


def test_imports_emulated_files_and_replay_matches(data_root, fmt):
    from synthface.hand_labels import write_labels_for_stage1
    from web.emulated import compare, emulated_labels
    prof = load_profile("synthface")
    s1 = prof.stage_dir("stage1")
    (s1 / "metrics.json").write_text("{}")
    write_labels_for_stage1(s1, **hand_label_settings(prof))   # what stage 1 writes for stage 2 today
    before = {g: p.read_bytes() for g, p in files_of(data_root).items()}
    ref = emulated_labels(prof, s1)
    store = new_store(data_root, fmt)                     # starts from the existing files, unchanged
    assert {g: p.read_bytes() for g, p in files_of(data_root).items()} == before
    assert store.progress()["labelled"] == N
    r = compare(store.labels_frame(), ref, store.properties)
    assert r["all_equal"] and r["images"] == N
    # replaying the labeller into a fresh file gives the same bytes
    for p in files_of(data_root).values():
        p.unlink()
    store.sidecar.unlink()
    fresh = new_store(data_root, fmt)
    for row in ref.to_dict("records"):
        label_all(fresh, row["img_name"], {p: row[p] for p in fresh.properties})
    assert {g: p.read_bytes() for g, p in files_of(data_root).items()} == before


@pytest.fixture
def client(data_root):
    from fastapi.testclient import TestClient

    from web.app import labeling_app
    app, store, _ = labeling_app(load_profile("synthface"), count=20)
    with TestClient(app) as c:
        yield c, store


def test_api_labels_and_rejects_bad_input(client):
    c, store = client
    cfg = c.get("/api/labeling/config").json()
    assert cfg["properties"] == ["quality", "gender", "age", "glass"] and cfg["progress"]["total"] == 20
    assert cfg["emulated"] is True
    for p, v in ONES.items():
        r = c.post("/api/labeling/label", json={"img_no": 4, "prop": p, "value": v})
        assert r.status_code == 200
    assert r.json()["complete"] and r.json()["next_unlabelled"] == 5
    assert c.get("/api/labeling/png/4").headers["content-type"] == "image/png"
    assert c.get("/api/labeling/emulated/4").json()["labels"].keys() == ONES.keys()
    bad = [
        ({"img_no": 4, "prop": "hair", "value": 1}, 422, "unknown label 'hair'"),
        ({"img_no": 4, "prop": "age", "value": 5}, 422, "out of range"),
        ({"img_no": 400, "prop": "age", "value": 1}, 404, "not a stage-1 image"),
        ({"img_no": "four", "prop": "age", "value": 1}, 422, "not an integer"),
        ({"prop": "age"}, 422, "img_no: Field required"),
    ]
    for body, status, text in bad:
        r = c.post("/api/labeling/label", json=body)
        assert r.status_code == status and text in r.json()["detail"], (body, r.status_code, r.text)
    r = c.post("/api/labeling/label", content=b"{no json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    assert c.get("/api/labeling/png/abc").status_code == 422
    assert c.get("/api/labeling/images/99999").status_code == 404
    assert c.post("/api/labeling/skip", json={}).json()["detail"] == "img_no is missing"
    assert c.post("/api/labeling/undo", json={}).json()["img_no"] == 4
    assert c.post("/api/labeling/undo", json={}).status_code == 409
    assert store.progress()["labelled"] == 0
    assert c.get("/labeling").status_code == 200 and "labeling.js" in c.get("/labeling").text


def test_script_binds_localhost_and_checks_emulated(data_root, capsys):
    import run_labeling
    from web.app import LOCALHOST
    assert run_labeling.HOST == LOCALHOST == "127.0.0.1"
    from synthface.hand_labels import write_labels_for_stage1
    prof = load_profile("synthface")
    (prof.stage_dir("stage1") / "metrics.json").write_text("{}")
    write_labels_for_stage1(prof.stage_dir("stage1"), **hand_label_settings(prof))
    with pytest.raises(SystemExit) as e:
        run_labeling.main(["--check-emulated"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and f"{N} labelled images against the emulated labeller" in out and "all equal" in out
    df = pd.read_csv(files_of(data_root)[QG])
    atomic_write_text(files_of(data_root)[QG], df.assign(gender=1 - df["gender"]).to_csv(index=False))
    with pytest.raises(SystemExit) as e:
        run_labeling.main(["--check-emulated", "--import-files"])
    assert e.value.code == 1 and f"gender 0/{N}" in capsys.readouterr().out


def test_celeba256_session_has_no_replay(tmp_path, monkeypatch):
    """On a profile without a world the tool labels the same files; replay answers 404 with the reason."""
    from fastapi.testclient import TestClient

    from web.app import labeling_app
    monkeypatch.setenv("OHLORA_DATA_ROOT", str(tmp_path))
    prof = load_profile("celeba256")
    make_stage1(prof.stage_dir("stage1"), 6, res=16, render=False)
    app, store, ref = labeling_app(prof)
    assert ref is None and store.files[QG] == prof.data_root / "stage1" / "synthesize_results_quality_and_gender.csv"
    with TestClient(app) as c:
        assert c.get("/api/labeling/config").json()["emulated"] is False
        r = c.get("/api/labeling/emulated/0")
        assert r.status_code == 404 and "no emulated labeller" in r.json()["detail"]
        for p, v in ONES.items():
            c.post("/api/labeling/label", json={"img_no": 5, "prop": p, "value": v})
    assert store.files[AG].read_text() == "img_name,age,glass\n5,0,0\n"


def test_targets_are_the_first_count_images(data_root, fmt):
    store = new_store(data_root, fmt, targets=range(10))
    label_all(store, 15, ONES)                            # any stage-1 image may be labelled ...
    assert store.progress() == {"labelled": 0, "total": 10, "labelled_all": 1}   # ... the bar counts the targets
    assert store.next_unlabelled(15) == 0 and store.next_unlabelled(3) == 4
    label_all(store, 0, ONES)
    assert fmt.read(files_of(data_root)[QG], ("quality", "gender"))["img_name"].tolist() == [0, 15]
