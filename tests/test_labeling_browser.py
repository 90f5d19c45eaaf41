"""The labelling page in a real browser (headless chromium from the distribution, driven by
Playwright): keyboard labelling, undo / skip / jump, 100 labels against the emulated labeller,
a kill -9 of the server in the middle, and stage 2 reading the result.

Skipped (with the reason) when playwright or chromium is missing, unless OHLORA_REQUIRE_BROWSER=1,
then it fails. The server runs as ``python run_labeling.py`` in a subprocess on a synthface
stage 1 of 120 rendered faces; the page-time figure is printed (run with -s to see it).
"""
import shutil
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.profiles import REPO_ROOT, load_profile
from tests.browser_support import screenshot_path, Server, launch_browser
from tests.labeling_world import hand_label_settings, make_stage1

pytestmark = pytest.mark.browser

N_IMAGES = 120
SCREENSHOT = screenshot_path("labeling_page.jpg")
QG_FILE = "synthesize_results_quality_and_gender.csv"
AG_FILE = "synthesize_results_age_and_glass.csv"


@pytest.fixture(scope="module")
def browser():
    yield from launch_browser()


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A synthface stage 1 (no label files) and the labels stage 2 uses for it today: the files
    stage 1's emulated labeller writes, read with stage 2's reader."""
    from stages.filtering_inputs import read_label_file
    from synthface.hand_labels import write_labels_for_stage1
    root = tmp_path_factory.mktemp("labweb")
    s1 = make_stage1(root / "synthface" / "stage1", N_IMAGES, res=128, render=True)
    ref = tmp_path_factory.mktemp("labref") / "stage1"
    shutil.copytree(s1, ref)
    (ref / "metrics.json").write_text("{}")
    write_labels_for_stage1(ref, **hand_label_settings(load_profile("synthface")))
    qg = read_label_file(ref / QG_FILE, ("quality", "gender")).drop(columns="_row")
    ag = read_label_file(ref / AG_FILE, ("age", "glass")).drop(columns="_row")
    return root, qg.merge(ag, on="img_name", validate="1:1")


@pytest.fixture
def data_root(template, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(template[0], root)
    return root


@pytest.fixture
def server(data_root, tmp_path):
    s = Server("run_labeling.py", data_root, tmp_path / "server.log", "api/labeling/config").start()
    yield s
    s.stop()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1000, "height": 540})
    pg = ctx.new_page()
    yield pg
    ctx.close()


def open_page(page, url):
    page.goto(url + "labeling")
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_function("() => window.labeling.idle() && window.labeling.current() !== null", polling=10)
    return page.evaluate("window.labeling.current()")


KEYS = {"quality": {1: "g", 0: "d"}, "gender": {1: "f", 0: "m"}, "age": {1: "o", 0: "y"}, "glass": {1: "e", 0: "n"}}


def label_current(page, reference: pd.DataFrame, wait=True) -> int:
    """Type the emulated labeller's four keys for the image on screen; returns its number."""
    n = page.evaluate("window.labeling.current()")
    row = reference.loc[reference["img_name"] == n].iloc[0]
    for prop in ("gender", "quality", "age", "glass"):
        page.keyboard.press(KEYS[prop][int(row[prop])])
    if wait:
        page.wait_for_function(f"() => window.labeling.idle() && window.labeling.current() !== {n}", polling=10)
    return n


def written_labels(stage1: Path) -> pd.DataFrame:
    from stages.filtering_inputs import read_label_file
    qg = read_label_file(stage1 / QG_FILE, ("quality", "gender")).drop(columns="_row")
    ag = read_label_file(stage1 / AG_FILE, ("age", "glass")).drop(columns="_row")
    return qg.merge(ag, on="img_name", validate="1:1")


def same_as_reference(df: pd.DataFrame, reference: pd.DataFrame, img_nos) -> None:
    want = reference[reference["img_name"].isin(list(img_nos))].reset_index(drop=True)
    pd.testing.assert_frame_equal(df.reset_index(drop=True)[want.columns], want, check_dtype=False)


def test_label_20_by_keyboard_with_undo_skip_jump(page, server, data_root, template):
    reference = template[1]
    s1 = data_root / "synthface" / "stage1"
    assert open_page(page, server.url) == 0
    done = [label_current(page, reference) for _ in range(20)]
    assert done == list(range(20))
    same_as_reference(written_labels(s1), reference, range(20))
    assert page.inner_text("#progress-text").startswith(f"20 / {N_IMAGES} labelled")
    # undo: Backspace brings image 19 back unlabelled (and out of the file); relabel it
    page.keyboard.press("Backspace")
    page.wait_for_function("() => window.labeling.idle() && window.labeling.current() === 19", polling=10)
    assert written_labels(s1)["img_name"].tolist() == list(range(19))
    assert label_current(page, reference) == 19
    # skip with Space, jump with j, a bad jump gives a message and a 404, not a crash
    page.keyboard.press(" ")
    page.wait_for_function("() => window.labeling.idle() && window.labeling.current() === 21", polling=10)
    page.keyboard.press("j")
    page.keyboard.type("99999")
    page.keyboard.press("Enter")
    page.wait_for_function("() => window.labeling.idle() && window.labeling.stats.errors === 1", polling=10)
    assert "404: image 99999 is not a stage-1 image" in page.inner_text("#message")
    # a second tab on the same server and files, labelling 60.. while this one labels 21..: nothing lost
    tab2 = page.context.new_page()
    assert open_page(tab2, server.url) == 21
    tab2.keyboard.press("j")
    tab2.keyboard.type("60")
    tab2.keyboard.press("Enter")
    tab2.wait_for_function("() => window.labeling.idle() && window.labeling.current() === 60", polling=10)
    both = []
    for _ in range(5):
        both.append(label_current(page, reference, wait=False))
        both.append(label_current(tab2, reference, wait=False))
        for tab, n in ((page, both[-2]), (tab2, both[-1])):
            tab.wait_for_function(f"() => window.labeling.idle() && window.labeling.current() !== {n}", polling=10)
    tab2.close()
    assert sorted(both) == list(range(21, 26)) + list(range(60, 65))
    same_as_reference(written_labels(s1), reference, list(range(20)) + both)
    page.keyboard.press("j")
    page.keyboard.type("20")
    page.keyboard.press("Enter")
    page.wait_for_function("() => window.labeling.idle() && window.labeling.current() === 20", polling=10)
    page.keyboard.press(KEYS["gender"][int(reference.loc[20, "gender"])])      # a half-labelled image on screen
    page.wait_for_function("() => window.labeling.idle()", polling=10)
    page.screenshot(path=str(SCREENSHOT), type="jpeg", quality=70)
    with urllib.request.urlopen(server.url + "api/labeling/images/20") as r:
        assert b'"labels":{"gender"' in r.read()
    same_as_reference(written_labels(s1), reference, list(range(20)) + both)


def test_100_labels_under_60_s_equal_the_emulated_labeller(page, server, data_root, template, monkeypatch):
    reference = template[1]
    s1 = data_root / "synthface" / "stage1"
    open_page(page, server.url)
    t0 = time.perf_counter()
    done = [label_current(page, reference) for _ in range(100)]
    wall = time.perf_counter() - t0
    st = page.evaluate("window.labeling.stats")
    page_s = (st["lastAckAt"] - st["firstKeyAt"]) / 1000
    print(f"\n100 images labelled by keyboard: {st['keys']} keys, page time {page_s:.1f} s "
          f"(first key to last reply), test wall time {wall:.1f} s")
    assert done == list(range(100)) and st["keys"] == 400 and len(st["acked"]) == 400 and st["errors"] == 0
    assert page_s < 60
    df = written_labels(s1)
    same_as_reference(df, reference, range(100))
    # stage 2 takes the files as its training labels: 100 labelled images, the other 20 to score
    from stages.filtering_inputs import DEFAULT_LABEL_FILES, load_inputs
    files = {g: s1.parent / rel for g, rel in DEFAULT_LABEL_FILES.items()}
    inputs = load_inputs(files, ("gender", "quality", "age", "glass"), 128, s1, show_progress=False)
    assert inputs.labelled.tolist() == list(range(100)) and inputs.unlabelled.tolist() == list(range(100, N_IMAGES))
    assert inputs.labels["glass"].tolist() == reference["glass"].tolist()[:100]
    # the page replays the emulated labeller by itself (?replay=1): ten more images, the same labels
    page.goto(server.url + "labeling?replay=1")
    page.wait_for_function("() => document.body.dataset.ready === '1' && window.labeling.stats.acked.length >= 40",
                           polling=10)
    page.click("#replay")
    page.wait_for_function("() => window.labeling.idle()", polling=10)
    df = written_labels(s1)
    assert len(df) >= 110 and df["img_name"].tolist() == list(range(len(df)))
    same_as_reference(df, reference, range(len(df)))


def test_kill_9_mid_run_loses_nothing(page, server, data_root, template, tmp_path):
    from web.labels import sidecar_path
    reference = template[1]
    s1 = data_root / "synthface" / "stage1"
    open_page(page, server.url)
    for _ in range(15):
        label_current(page, reference)
    # type ahead for five more images and kill the server while the page is sending them
    for _ in range(5):
        n = page.evaluate("window.labeling.current()")
        label_current(page, reference, wait=False)
        if n == 16:
            page.wait_for_function("() => window.labeling.stats.acked.length >= 62", polling=5)
            server.kill9()
            break
        page.wait_for_function(f"() => window.labeling.current() !== {n}", polling=5)
    page.keyboard.press("g")          # one more key to a dead server (in case the page had caught up before the kill)
    page.wait_for_function("() => window.labeling.idle() && window.labeling.stats.errors > 0", polling=10)
    assert "not reachable" in page.inner_text("#message")
    acked = page.evaluate("window.labeling.stats.acked")
    assert len(acked) >= 62
    # right after the kill: complete files only, read by stage 2's reader
    df = written_labels(s1)
    done = df["img_name"].tolist()
    assert done == list(range(len(done))) and len(done) >= 15
    same_as_reference(df, reference, done)
    # restart: every acknowledged label is there, nothing half-written is left, the page resumes
    server.start()
    state = pd.read_json(sidecar_path({"qg": s1 / QG_FILE}), typ="series")
    for n, prop, value in acked:
        assert state["labels"][str(n)][prop] == value, (n, prop)
    assert not list(s1.glob(".*.tmp*"))
    first = open_page(page, server.url)
    assert first == min(n for n in range(N_IMAGES) if len(state["labels"].get(str(n), {})) < 4)
    while page.evaluate("window.labeling.current()") < 30:
        label_current(page, reference)
    same_as_reference(written_labels(s1), reference, range(30))
    assert np.array_equal(written_labels(s1)["img_name"].to_numpy(), np.arange(30))
