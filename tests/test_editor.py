"""The face editor's server without a browser (FastAPI's test client): bad input gets a 4xx naming
the field, saves are whole folders, and the direction sets of a leaderboard folder and of stage-7
runs are found with their α scales. Shipped synthface models only (empty data root)."""
import ast
import json

import numpy as np
import pytest

from pipeline.profiles import REPO_ROOT, load_profile

Z_DIM = 256


@pytest.fixture(scope="module")
def editor(tmp_path_factory):
    import torch
    from fastapi.testclient import TestClient

    from editing.directions import EditDirections
    from vectorfind.directions import DirectionSet
    from vectorfind.groups import GROUP_ORDER
    from web.editor import editor_app

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("editor_api")
    profile = load_profile("synthface")
    profile["data_root"] = str(root / "data")
    rng = np.random.default_rng(0)
    # a leaderboard folder: one method's set (saved before calibration, as the board does) and its
    # conditional row, which has only result.json
    board = root / "board"
    ds = EditDirections("interfacegan", "w")
    for p in ("eyes", "mouth", "pose"):
        ds.add(p, rng.standard_normal(Z_DIM))
    ds.save(board / "methods" / "interfacegan" / "directions")
    for name, scale in (("interfacegan", 5.0), ("interfacegan_conditional", 7.0)):
        (board / "methods" / name).mkdir(parents=True, exist_ok=True)
        (board / "methods" / name / "result.json").write_text(json.dumps({"scales": {"eyes": scale, "mouth": 1.0,
                                                                                      "pose": 2.0}}))
    # a row from a newer board: its calibrated set in edit_set/ wins over directions/ + result.json
    gs = EditDirections("ganspace", "w")
    for p in ("eyes", "mouth", "pose"):
        gs.add(p, rng.standard_normal(Z_DIM))
    gs.save(board / "methods" / "ganspace" / "directions")
    gs.scales.update({"eyes": 3.0, "mouth": 4.0, "pose": 6.0})
    gs.save(board / "methods" / "ganspace" / "edit_set")
    (board / "methods" / "ganspace" / "result.json").write_text(json.dumps({"scales": {"eyes": 99.0}}))
    (board / "metrics.json").write_text(json.dumps({"generator": "shipped-v1", "settings": {"fit_judge": "evaluator"}}))
    # a stage-7 SVM run at w
    run = root / "stage7" / "svm_w_n4000_x1.5"
    vf = DirectionSet("w")
    for p in ("eyes", "mouth", "pose"):
        for g in GROUP_ORDER:
            vf.add(p, g, (v := rng.standard_normal(Z_DIM).astype(np.float32)) / np.linalg.norm(v))
    (run / "property_score_vectors").mkdir(parents=True)
    vf.save(run / "property_score_vectors")
    (run / "metrics.json").write_text(json.dumps({"method": "svm", "point": "w", "n": 4000, "alpha_scale": 1.5,
                                                  "fit_judge": "evaluator", "generator": {"source": "shipped-v1"},
                                                  "medians": {"hair_color": 0.0, "hair_length": 0.5,
                                                              "background_mean": 0.0, "hairstyle": 0.4}}))
    app, models = editor_app(profile, root / "saves", board_dir=board, stage7_dir=root / "stage7",
                             judges=("evaluator",), preload=())
    return TestClient(app), models, root


def render(client, **body):
    r = client.post("/api/editor/render", json=body)
    return r.status_code, r.json()


def test_choices_and_scales(editor):
    client, models, _ = editor
    cfg = client.get("/api/editor/config").json()
    keys = [m["key"] for m in cfg["methods"]]
    assert keys == ["v3_label", "sefa", "board:ganspace", "board:interfacegan", "board:interfacegan_conditional",
                    "vectorfind:svm_w_n4000_x1.5"]
    assert cfg["z_dim"] == Z_DIM and cfg["num_layers"] == 12 and cfg["judges"] == ["evaluator"]
    assert "shipped-v1" in cfg["notes"][0]                  # no stage-6 run in this data root
    assert models.choice("board:interfacegan").ds.scales == {"eyes": 5.0, "mouth": 1.0, "pose": 2.0}
    cond = client.get("/api/editor/method/board:interfacegan_conditional").json()
    assert cond["layers"] and not cond["conditional"]        # always conditional: no check box
    assert models.choices["board:interfacegan_conditional"].ds.scales["eyes"] == 7.0
    assert models.choice("board:ganspace").ds.scales == {"eyes": 3.0, "mouth": 4.0, "pose": 6.0}
    assert models.choices["board:ganspace"].source.endswith("edit_set")
    vf = models.choice("vectorfind:svm_w_n4000_x1.5").ds
    assert vf.method == "vectorfind_svm" and vf.scales == pytest.approx({"eyes": 1.8, "mouth": 2.7, "pose": 2.7})
    status, r = render(client, method="vectorfind:svm_w_n4000_x1.5", seed=3, alphas={"eyes": 1.0})
    assert status == 200 and len(r["group"]) == 4 and set(r["group"]) <= {"h", "l"}


def test_a_render_is_the_editing_api(editor):
    import base64

    import cv2

    from editing.edit import edit
    from stylegan.generator import postprocess
    from stylegan.sampling import latent_z
    client, models, _ = editor
    status, r = render(client, method="board:interfacegan", seed=11, alphas={"eyes": 0.5, "pose": -1.0})
    assert status == 200 and set(r["measured"]["evaluator"]) == {"eyes", "mouth", "pose"}
    png = base64.b64decode(r["image"].split(",", 1)[1])
    got = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    z = latent_z([11], Z_DIM, 0)
    want = edit(models.generator("v9"), z, np.zeros((1, 7), np.float32), {"eyes": 0.5, "pose": -1.0},
                models.choices["board:interfacegan"].ds)
    assert np.array_equal(got, postprocess(want.images)[0])


@pytest.mark.parametrize("body,status,text", [
    ({"method": "nope", "seed": 1}, 422, "unknown method 'nope'; choose one of v3_label, sefa"),
    ({"method": "v3_label"}, 422, "give a seed or paste a z"),
    ({"method": "v3_label", "z": [0.1] * 255}, 422, "z has 255 numbers; the generator takes 256"),
    ({"method": "v3_label", "z": "0.5 " * 10}, 422, "z has 10 numbers"),
    ({"method": "v3_label", "z": [0.1] * 20 + ["inf"] + [0.1] * 235}, 422, "z[20] is not a finite number"),
    ({"method": "v3_label", "z": [0.1] * 20 + ["x"] + [0.1] * 235}, 422, "z[20] is not a number ('x')"),
    ({"method": "v3_label", "seed": 1.5}, 422, "seed 1.5 must be a whole number"),
    ({"method": "v3_label", "seed": 1, "alphas": {"eyes": 3.01}}, 422, "alpha for eyes = 3.01 is outside [-3, 3]"),
    ({"method": "v3_label", "seed": 1, "alphas": {"nose": 1}}, 422, "unknown property 'nose' in alphas"),
    ({"method": "v3_label", "seed": 1, "alphas": [1, 2]}, 422, "alphas must be an object"),
    ({"method": "v3_label", "seed": 1, "label": [0] * 6}, 422, "label has 6 numbers; the generator takes 7"),
    ({"method": "v3_label", "seed": 1, "label": [0] * 6 + [11]}, 422, "label[6] = 11 is outside [-10, 10]"),
    ({"method": "v3_label", "seed": 1, "layers": [0, 4]}, 422, "'label' space: it has no layer range"),
    ({"method": "board:interfacegan", "seed": 1, "layers": [4, 4]}, 422, "layer range [4, 4) is outside 0 … 12"),
    ({"method": "board:interfacegan", "seed": 1, "layers": [0]}, 422, "layers must be [start, stop]"),
])
def test_bad_input_is_a_4xx_naming_the_field(editor, body, status, text):
    client, _, _ = editor
    got, r = render(client, **body)
    assert got == status and text in r["detail"], r
    assert client.post("/api/editor/save", json=body).status_code == status


def test_nan_in_json_and_broken_json(editor):
    client, _, _ = editor
    body = '{"method": "v3_label", "z": [' + ", ".join(["0.1"] * 7 + ["NaN"] + ["0.1"] * 248) + "]}"
    r = client.post("/api/editor/render", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "z[7] is not a finite number" in r.json()["detail"]
    r = client.post("/api/editor/render", content="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    assert client.get("/api/editor/method/nope").status_code == 404


def test_save_folders_are_whole_and_numbered(editor):
    client, _, root = editor
    for k in range(2):
        r = client.post("/api/editor/save", json={"method": "board:interfacegan", "seed": 4,
                                                  "alphas": {"mouth": 0.5 * k}, "layers": [2, 8]})
        assert r.status_code == 200, r.json()
        folder = root / "saves" / f"{k:04d}"
        assert r.json()["folder"] == str(folder)
        assert sorted(p.name for p in folder.iterdir()) == ["directions", "edit.json", "image.png",
                                                            "latent_codes_part1.csv", "latent_codes_part2.csv", "z.csv"]
    rec = json.loads((folder / "edit.json").read_text())
    assert rec["layers"] == {"eyes": [2, 8], "mouth": [2, 8], "pose": [2, 8]} and rec["alphas"] == {"mouth": 0.5}
    assert rec["alpha_scales"] == {"mouth": 1.0} and rec["generator_source"] == "shipped-v1"
    assert "run_fine_tuned_generator" not in rec                  # a v9 edit: not a v3 label
    # stage 7's QA rows as stage 7 writes them: header 0 … d-1, no index, values to 4 dp
    z1 = (folder / "latent_codes_part1.csv").read_text().splitlines()
    z2 = (folder / "latent_codes_part2.csv").read_text().splitlines()
    assert z1[0] == ",".join(map(str, range(Z_DIM))) and z2 == ["0,1,2,3,4,5,6", "0.0,0.0,0.0,0.0,0.0,0.0,0.0"]
    assert max(len(x.split(".")[-1]) for x in z1[1].split(",")) <= 4 and rec["group"] is None
    assert not [p for p in (root / "saves").iterdir() if p.name.startswith(".")]


def test_editor_binds_localhost_by_default():
    from web.app import LOCALHOST, serve
    tree = ast.parse((REPO_ROOT / "run_editor.py").read_text())
    consts = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
              for t in n.targets}
    assert consts["HOST"] == "127.0.0.1" == LOCALHOST
    assert serve.__defaults__[0] == LOCALHOST


def test_without_a_world_the_property_cnn_measures(tmp_path):
    """A profile without a synthetic world (as celeba256): no evaluator; the property CNN measures, with
    the parser giving the hairstyle for groups."""
    from web.editor_models import EditorModels
    profile = load_profile("synthface")
    profile["data_root"] = str(tmp_path)
    del profile["world_seed"]
    models = EditorModels(profile)
    assert list(models.judges) == ["property_cnn"] and models.truth == "property_cnn"
    assert "no independent evaluator" in models.judge_notes["evaluator"]
    r = models.render("v3_label", models.z_of_seed(2), None, {"eyes": 1.0})
    assert set(r.measured) == {"property_cnn"} and set(r.measured["property_cnn"]) == {"eyes", "mouth", "pose"}


def test_a_named_v9_must_exist(tmp_path):
    from pipeline.io import InputError
    from web.editor_models import EditorModels
    profile = load_profile("synthface")
    profile["data_root"] = str(tmp_path)
    with pytest.raises(InputError, match="v9 generator .*nope.pth not found"):
        EditorModels(profile, v9_source="nope.pth", judges=("evaluator",))
