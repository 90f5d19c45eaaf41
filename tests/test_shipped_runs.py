"""Shipped stage-5 runs (pipeline.shipped): packed small, installed into a fresh data root, then only tested."""
import dataclasses
from collections import OrderedDict

import pytest
import torch

from stages.property_cnn import run_property_stage
from pipeline.shipped import ShippedRunError, full_state, install_run, partial_state
from training.gan import GanSettings
from training.cvae import V3Settings
from stages.settings import TEST_DEFAULTS
from stages.settings import profile_section as stage5_settings
from stages.finetune_gan import run_gan_stage
from stages.shipping import pack_gan_run, pack_property_run, pack_v3_run
from stages.finetune_v3 import run_v3_stage
from tests.single_thread import one_thread  # noqa: F401
from tests.stage5_world import make_root


def gan(prof, **kw):
    d = {f.name: f.default for f in dataclasses.fields(GanSettings)}
    return GanSettings(**{**stage5_settings(prof, "v1", d), "version": "v1", **kw})


def v3(prof, **kw):
    d = {f.name: f.default for f in dataclasses.fields(V3Settings)}
    return V3Settings(**{**stage5_settings(prof, "v3", d), **kw})


def tcfg(prof):
    return stage5_settings(prof, "generation_test", dict(TEST_DEFAULTS))


def tensors(path):
    return torch.load(path, weights_only=True)


def same(a, b):
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_partial_state_rebuilds_the_exact_state_dict():
    base = OrderedDict(a=torch.ones(3), b=torch.zeros(2, 2), c=torch.arange(4.0))
    full = OrderedDict(new=torch.full((2,), 7.0), a=torch.ones(3), b=torch.zeros(2, 2) + 1e-7, c=torch.arange(4.0))
    part = partial_state(full, base)
    assert list(part["tensors"]) == ["new", "b"] and part["keys"] == ["new", "a", "b", "c"]
    assert same(full_state(part, base, "x"), full)
    with pytest.raises(ShippedRunError, match="neither in the partial checkpoint nor in its base: a"):
        full_state(part, {"c": base["c"]}, "x")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """Data root A trains the property CNN, v1 and v3 (tiny) and packs them; returns (A, shipped folder)."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("ship")
    a = make_root(tmp / "a")
    a["stage5"]["shipped"] = str(tmp / "shipped")
    pa = run_property_stage(a, show_progress=False)
    ga = run_gan_stage(a, gan(a), tcfg(a), female_n=6, show_progress=False)
    va = run_v3_stage(a, v3(a), tcfg(a), female_n=6, show_progress=False)
    for pack in (lambda: pack_property_run(a), lambda: pack_gan_run(a, "v1"), lambda: pack_v3_run(a)):
        pack()
    return a, tmp / "shipped", {"property": pa, "v1": ga, "v3": va}


def fresh_root(tmp_path, shipped_dir):
    b = make_root(tmp_path / "b")
    b["stage5"]["shipped"] = str(shipped_dir)
    return b


def test_a_fresh_data_root_installs_the_shipped_runs_and_only_tests(shipped, tmp_path, capsys):
    a, sdir, ma = shipped
    for name in ("property_cnn/shipped.json", "v1/generator.pth.partial.pth", "v1/discriminator.pth.partial.pth",
                 "v1/train_steps.csv", "v3/generator.pth.partial.pth", "v3/encoder.pth", "v3/test_z.csv"):
        assert (sdir / name).is_file(), name
    # the partial G holds only what fine-tuning changed: the mapping network (and w_avg), not the synthesis
    part = torch.load(sdir / "v1" / "generator.pth.partial.pth", weights_only=True)
    assert part["tensors"] and all(k.startswith(("mapping.", "truncation.")) for k in part["tensors"])
    b = fresh_root(tmp_path, sdir)
    pb = run_property_stage(b, show_progress=False)
    gb = run_gan_stage(b, gan(b), tcfg(b), female_n=6, show_progress=False)
    vb = run_v3_stage(b, v3(b), tcfg(b), female_n=6, show_progress=False)
    assert "installed the shipped" in capsys.readouterr().out
    assert not pb["trained_this_run"] and not gb["trained_this_run"] and not vb["trained_this_run"]
    ra, rb = a.data_root / "stage5", b.data_root / "stage5"
    assert (ra / "property_cnn" / "all_scores_v2_cnn.csv").read_text() == \
        (rb / "property_cnn" / "all_scores_v2_cnn.csv").read_text()
    for rel in ("v1/generator.pth", "v1/discriminator.pth", "v3/generator.pth", "v3/encoder.pth"):
        assert same(tensors(ra / rel), tensors(rb / rel)), rel
    assert gb["generation_test"]["judges"] == ma["v1"]["generation_test"]["judges"]
    assert vb["generation_test_best"]["judges"] == ma["v3"]["generation_test_best"]["judges"]
    assert gb["steps"] == ma["v1"]["steps"] and vb["steps"] == ma["v3"]["steps"]
    assert (rb / "v1" / "report.md").is_file() and (rb / "v3" / "report.md").is_file()


def test_other_settings_or_another_base_train_instead(shipped, tmp_path, capsys):
    a, sdir, _ = shipped
    b = fresh_root(tmp_path, sdir)
    m = run_gan_stage(b, gan(b, seed=5), tcfg(b), female_n=6, show_progress=False)
    assert m["trained_this_run"] and "other settings (seed)" in capsys.readouterr().out
    c = fresh_root(tmp_path / "c", sdir)
    base = torch.load(tmp_path / "c" / "b" / "base.pth", weights_only=True)
    base["generator"]["mapping.dense0.bias"] += 1.0
    torch.save(base, tmp_path / "c" / "b" / "base.pth")
    m = run_gan_stage(c, gan(c), tcfg(c), female_n=6, show_progress=False)
    assert m["trained_this_run"] and "fine-tuned from another" in capsys.readouterr().out


def test_a_damaged_shipped_file_is_an_error_naming_it(shipped, tmp_path):
    a, sdir, _ = shipped
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(sdir, bad)
    p = bad / "v1" / "train_steps.csv"
    p.write_text(p.read_text() + "x")
    b = fresh_root(tmp_path, bad)
    with pytest.raises(ShippedRunError, match="train_steps.csv does not match its sha256"):
        run_gan_stage(b, gan(b), tcfg(b), female_n=6, show_progress=False)
    assert install_run(tmp_path / "nothing", tmp_path / "out", {}) is None


def test_ship_cli_packs_the_default_stages_and_refuses_unknown_ones(monkeypatch):
    import run_pack_shipped
    from stages import shipping
    done = []
    monkeypatch.setattr(shipping, "pack", lambda profile, stage: done.append(stage) or {"files": {}})
    run_pack_shipped.main([])
    assert done == ["property_cnn", "v1", "v3"]
    run_pack_shipped.main(["v9"])                     # stage 6 (stage6.shipped)
    assert done[-1] == "v9"
    with pytest.raises(SystemExit):
        run_pack_shipped.main(["v10"])


def _edit_kept_set(src, dest, stage, images):
    import json
    import shutil
    shutil.copytree(src, dest)
    p = dest / stage / "shipped.json"
    m = json.loads(p.read_text())
    m["settings"].update(images=images, img_nos_sha256="0" * 64)
    m.pop("img_nos", None)
    p.write_text(json.dumps(m))
    return m


def test_kept_set_check_tolerates_a_few_percent_and_names_the_counts():
    from pipeline.shipped import kept_set_check
    man = {"settings": {"images": 2309, "img_nos_sha256": "a", "lr": 1}, "img_nos": list(range(2309))}
    assert kept_set_check(man, {"images": 2309, "img_nos_sha256": "a"}) == (None, None)
    info, refusal = kept_set_check(man, {"images": 2335, "img_nos_sha256": "b"}, img_nos=range(26, 2361))
    assert refusal is None
    assert info == {"kept_set": "differs", "shipped_images": 2309, "local_images": 2335,
                    "only_shipped": 26, "only_local": 52}
    info, refusal = kept_set_check(man, {"images": 2309 + 116, "img_nos_sha256": "b"})
    assert info is None and "2309 images, this run keeps 2425" in refusal
    assert kept_set_check(man, {"images": 2424, "img_nos_sha256": "b"})[1] is None    # 4.98 %


def test_a_slightly_different_kept_set_installs_with_a_note_and_a_record(shipped, tmp_path, capsys):
    a, sdir, ma = shipped
    n = ma["property"]["images"]
    assert n >= 20       # a 1-image difference is within 5 % from 20 images on
    _edit_kept_set(sdir, tmp_path / "near", "property_cnn", n + 1)
    b = fresh_root(tmp_path, tmp_path / "near")
    m = run_property_stage(b, show_progress=False)
    out = capsys.readouterr().out
    assert not m["trained_this_run"] and "note: the shipped property CNN run was trained on" in out
    assert m["shipped_install"] == {"kept_set": "differs", "shipped_images": n + 1, "local_images": n}


def test_a_kept_set_beyond_the_tolerance_or_no_shipped_trains(shipped, tmp_path, capsys):
    a, sdir, ma = shipped
    n = ma["property"]["images"]
    _edit_kept_set(sdir, tmp_path / "far", "property_cnn", 2 * n)
    b = fresh_root(tmp_path, tmp_path / "far")
    m = run_property_stage(b, show_progress=False)
    out = capsys.readouterr().out
    assert m["trained_this_run"] and f"made on a kept set of {2 * n} images, this run keeps {n}" in out
    assert "training instead" in out and "shipped_install" not in m
    c = fresh_root(tmp_path / "c", sdir)
    c["stage5"]["use_shipped"] = False
    assert shipped_dir_of(c) is None


def shipped_dir_of(profile):
    from pipeline.shipped import shipped_dir
    return shipped_dir(profile, "property_cnn")
