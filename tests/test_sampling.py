"""stages.sampling (stage 1, run_original_generator.py): determinism, resume, kill-and-resume, sharding, outputs."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.runtime import Shard
from stylegan.sampling import latent_z
from stages.sampling import SamplingSettings, run_sampling

ROOT = Path(__file__).resolve().parent.parent


def settings(**kw):
    base = dict(num_images=20, batch_size=4, seed=3)
    base.update(kw)
    return SamplingSettings(**base)


def files(folder: Path) -> dict:
    out = {p.name: p.read_bytes() for p in sorted((folder / "images").glob("*.png"))}
    out["latents.csv"] = (folder / "latents.csv").read_bytes()
    return out


def test_outputs_and_same_seed_gives_byte_identical_files(tiny_profile, tmp_path):
    m = run_sampling(tiny_profile, settings(), tmp_path / "a", show_progress=False)
    run_sampling(tiny_profile, settings(), tmp_path / "b", show_progress=False)
    a, b = files(tmp_path / "a"), files(tmp_path / "b")
    assert len(a) == 21 and a == b
    assert m["complete"] and m["count"] == 20 and m["last_run"]["generated_this_run"] == 20
    assert m["last_run"]["images_per_s"] > 0 and m["last_run"]["peak_rss_mb"] > 0
    df = pd.read_csv(tmp_path / "a" / "latents.csv")
    assert list(df.columns[:3]) == ["img_no", "img_name", "z_0"] and len(df.columns) == 2 + 32
    assert df["img_name"].tolist()[:2] == ["000000.png", "000001.png"]
    z = df[[f"z_{i}" for i in range(32)]].to_numpy(np.float32)
    assert np.array_equal(z, latent_z(range(20), 32, 3))          # float32 round trip is exact
    assert (tmp_path / "a" / "report.md").read_text().count("contact_sheet.png") == 1
    assert (tmp_path / "a" / "report" / "contact_sheet.png").stat().st_size > 1000
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["settings"]["seed"] == 3


def test_different_seed_gives_different_images(tiny_profile, tmp_path):
    run_sampling(tiny_profile, settings(num_images=4), tmp_path / "a", show_progress=False)
    run_sampling(tiny_profile, settings(num_images=4, seed=4), tmp_path / "b", show_progress=False)
    assert files(tmp_path / "a")["000000.png"] != files(tmp_path / "b")["000000.png"]


def test_rerun_skips_finished_work_and_resume_fills_gaps(tiny_profile, tmp_path):
    run_sampling(tiny_profile, settings(), tmp_path / "full", show_progress=False)
    out = tmp_path / "part"
    run_sampling(tiny_profile, settings(), out, show_progress=False)
    again = run_sampling(tiny_profile, settings(), out, show_progress=False)
    assert again["last_run"]["generated_this_run"] == 0 and again["last_run"]["skipped_existing"] == 20
    for n in (1, 9, 10, 19):                        # an interrupted run leaves holes
        (out / "images" / f"{n:06d}.png").unlink()
    (out / "latents.csv").unlink()
    res = run_sampling(tiny_profile, settings(), out, show_progress=False)
    assert res["last_run"]["generated_this_run"] == 4
    assert files(out) == files(tmp_path / "full")


def test_settings_change_in_existing_folder_is_refused(tiny_profile, tmp_path):
    run_sampling(tiny_profile, settings(num_images=4), tmp_path / "a", show_progress=False)
    with pytest.raises(ValueError, match=r"seed: folder has 3, this run 5"):
        run_sampling(tiny_profile, settings(num_images=4, seed=5), tmp_path / "a", show_progress=False)


def test_shards_merge_to_the_single_process_result(tiny_profile, tmp_path):
    run_sampling(tiny_profile, settings(), tmp_path / "one", show_progress=False)
    out = tmp_path / "sharded"
    r0 = run_sampling(tiny_profile, settings(), out, shard=Shard(0, 3), show_progress=False)
    assert not r0["complete"]
    run_sampling(tiny_profile, settings(), out, shard=Shard(2, 3), show_progress=False)
    r1 = run_sampling(tiny_profile, settings(), out, shard=Shard(1, 3), show_progress=False)
    assert r1["complete"]
    assert files(out) == files(tmp_path / "one")
    assert Shard.parse("1/3") == Shard(1, 3)
    with pytest.raises(ValueError):
        Shard.parse("3/3")


def test_style_mixing_option_is_seeded_and_recorded(tiny_profile, tmp_path):
    run_sampling(tiny_profile, settings(num_images=8), tmp_path / "plain", show_progress=False)
    m = run_sampling(tiny_profile, settings(num_images=8, style_mixing_prob=1.0), tmp_path / "mix", show_progress=False)
    run_sampling(tiny_profile, settings(num_images=8, style_mixing_prob=1.0), tmp_path / "mix2", show_progress=False)
    df = pd.read_csv(tmp_path / "mix" / "latents.csv")
    assert df["mix_cutoff"].between(1, 7).all() and "z2_31" in df.columns and m["mixed_images"] == 8
    assert files(tmp_path / "mix") == files(tmp_path / "mix2")
    plain, mixed = files(tmp_path / "plain"), files(tmp_path / "mix")
    assert all(plain[k] != mixed[k] for k in plain if k.endswith(".png"))
    assert "mix_cutoff" not in pd.read_csv(tmp_path / "plain" / "latents.csv").columns


def test_killed_run_resumes_to_identical_files(tiny_profile, tmp_path):
    prof_file = tmp_path / "tiny.json"
    prof_file.write_text(json.dumps(dict(tiny_profile)))
    cmd = [sys.executable, str(ROOT / "run_original_generator.py"), "--profile", str(prof_file), "--no-progress",
           "--num-images", "160", "--batch-size", "2", "--seed", "3"]
    subprocess.run(cmd + ["--out", str(tmp_path / "whole")], check=True, cwd=ROOT, capture_output=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((out / "images").glob("*.png"))) < 10:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((out / "images").glob("*.png")))
    assert 10 <= done < 160, f"kill landed at {done} images"
    assert not (out / "latents.csv").exists()
    subprocess.run(cmd + ["--out", str(out)], check=True, cwd=ROOT, capture_output=True)
    leftovers = [p.name for p in (out / "images").iterdir() if not p.name.endswith(".png")]
    assert files(out) == files(tmp_path / "whole")
    assert leftovers == []                      # stale temporary files of the killed writer are cleaned


def test_synthface_stage1_writes_emulated_hand_labels(tmp_path):
    """A profile with a world map and a hand_labels block gets the original's label files after stage 1."""
    from synthface.hand_labels import AG_FILE, QG_FILE
    from synthface.world import WorldMap
    prof = {"name": "tinyworld", "data_root": str(tmp_path / "runs"), "resolution": 32, "world_seed": 0,
            "generator": {"resolution": 32, "z_dim": 128, "w_dim": 32, "mapping_layers": 2, "mapping_fmaps": 32,
                          "fmaps_base": 256, "fmaps_max": 32},
            "generator_checkpoint": None, "random_init_seed": 1, "stage1": {"batch_size": 8},
            "hand_labels": {"count": 30, "noise_rate": 0.0, "seed": 0}}
    (tmp_path / "p.json").write_text(json.dumps(prof))
    out = tmp_path / "s1"
    subprocess.run([sys.executable, str(ROOT / "run_original_generator.py"), "--profile", str(tmp_path / "p.json"),
                    "--num-images", "40", "--out", str(out), "--no-progress"], check=True, cwd=ROOT, capture_output=True)
    qg = pd.read_csv(out / QG_FILE)
    ag = pd.read_csv(out / AG_FILE)
    assert len(qg) == len(ag) == 30 and qg["img_name"].tolist() == list(range(30))
    z = pd.read_csv(out / "latents.csv")[[f"z_{i}" for i in range(128)]].to_numpy(np.float32)[:30]
    truth = WorldMap(128, 0).truth(z)
    assert (qg["gender"].to_numpy() == truth["female"].to_numpy().astype(int)).all()      # noise rate 0
    assert (ag["glass"].to_numpy() == truth["glasses"].to_numpy().astype(int)).all()
    assert json.loads((out / "metrics.json").read_text())["hand_labels"]["count"] == 30


def test_changed_checkpoint_content_is_refused(tiny_profile, tmp_path):
    """Same checkpoint path, new weights: the folder's images must not be silently reused."""
    import torch
    from stylegan import GeneratorConfig, StyleGANGenerator
    from pipeline.checkpoint import save_checkpoint
    ck = tmp_path / "g.pth"
    cfg = GeneratorConfig.from_dict(tiny_profile["generator"])
    torch.manual_seed(0)
    save_checkpoint({"generator": StyleGANGenerator(cfg).state_dict()}, ck)
    prof = dict(tiny_profile, generator_checkpoint=str(ck), random_init_seed=None)
    from pipeline.profiles import Profile
    run_sampling(Profile(prof), settings(num_images=4), tmp_path / "a", show_progress=False)
    torch.manual_seed(1)
    save_checkpoint({"generator": StyleGANGenerator(cfg).state_dict()}, ck)
    with pytest.raises(ValueError, match="generator_checkpoint_sha256"):
        run_sampling(Profile(prof), settings(num_images=4), tmp_path / "a", show_progress=False)


def test_relaxed_inference_path_stays_within_one_grey_level_and_is_recorded(tiny_profile, tmp_path):
    """INFERENCE_PATH = "relaxed": the fast path in micro-batches (batch-size independent), images
    within one grey level of the exact path's; a folder finished under one path refuses the other."""
    from stylegan.sampling import FAST, stage_plan
    from pipeline.io import read_png_rgb
    assert stage_plan("relaxed") == FAST and stage_plan("exact").path == "exact"
    with pytest.raises(ValueError, match="inference path"):
        stage_plan("fast")
    run_sampling(tiny_profile, settings(num_images=8), tmp_path / "exact", show_progress=False)
    run_sampling(tiny_profile, settings(num_images=8), tmp_path / "fast", show_progress=False, plan=FAST)
    run_sampling(tiny_profile, settings(num_images=8, batch_size=3), tmp_path / "fast3", show_progress=False, plan=FAST)
    a = np.stack([read_png_rgb(p) for p in sorted((tmp_path / "exact" / "images").glob("*.png"))]).astype(int)
    b = np.stack([read_png_rgb(p) for p in sorted((tmp_path / "fast" / "images").glob("*.png"))]).astype(int)
    assert np.abs(a - b).max() <= 1
    assert files(tmp_path / "fast") == files(tmp_path / "fast3")
    rec = json.loads((tmp_path / "fast" / "run_config.json").read_text())
    assert rec["inference"]["path"] == "relaxed"
    with pytest.raises(ValueError, match="inference"):
        run_sampling(tiny_profile, settings(num_images=8), tmp_path / "fast", show_progress=False)


def test_auto_inference_path_is_relaxed_for_a_new_folder_and_keeps_a_folders_recorded_path(tiny_profile, tmp_path):
    """INFERENCE_PATH = "auto" (the default): a new folder renders on the relaxed path; a folder started
    under either path keeps it (its run_config.json), so a re-run never refuses or re-renders it; images
    without a record (made before "auto") count as exact."""
    from stages.sampling import folder_path
    from stylegan.sampling import DETERMINISTIC, FAST, stage_plan
    assert folder_path("auto", tmp_path / "new") == "relaxed"
    assert folder_path("exact", tmp_path / "new") == "exact" and folder_path("relaxed", tmp_path / "x") == "relaxed"
    run_sampling(tiny_profile, settings(num_images=8), tmp_path / "exact", show_progress=False, plan=DETERMINISTIC)
    run_sampling(tiny_profile, settings(num_images=8), tmp_path / "fast", show_progress=False, plan=FAST)
    assert folder_path("auto", tmp_path / "exact") == "exact" and folder_path("auto", tmp_path / "fast") == "relaxed"
    before = files(tmp_path / "exact")
    m = run_sampling(tiny_profile, settings(num_images=8), tmp_path / "exact", show_progress=False,
                     plan=stage_plan(folder_path("auto", tmp_path / "exact")))
    assert m["last_run"]["generated_this_run"] == 0 and files(tmp_path / "exact") == before
    (tmp_path / "exact" / "run_config.json").unlink()
    assert folder_path("auto", tmp_path / "exact") == "exact"
