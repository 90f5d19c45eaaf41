"""Stage 3 (face parsing): outputs, truth scoring, resume, corrupt inputs, no-face behaviours, determinism."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import lineage
import torch
import torch.nn as nn

from pipeline.io import atomic_write_png, read_png_rgb
from pipeline.profiles import Profile, load_profile
from pipeline.io import InputError
from segmentation.backends import DetectorBackend, crop_true_mask, overlay
from stages.parsing import ParsingInputError, ParsingRun, ParsingSettings, build_backend, run_parsing
from segmentation.synth_segmenter import normalise, resize_bicubic, resize_mask_nearest
from stylegan.sampling import latent_z
from synthface.renderer import render_batch
from synthface.world import WorldMap

NOS = [0, 2, 5, 9, 10, 31]


def make_data_root(root: Path, nos=NOS, grey=()) -> dict:
    """stage1/latents.csv (40 rows, as stage 1 writes it) + stage2/filtered/NNNNNN.png renders of truth(z)."""
    z = latent_z(range(40), 256, seed=0)
    df = pd.concat([pd.DataFrame({"img_no": np.arange(40), "img_name": [f"{n:06d}.png" for n in range(40)]}),
                    pd.DataFrame(z, columns=[f"z_{i}" for i in range(256)])], axis=1)
    (root / "stage1").mkdir(parents=True)
    df.to_csv(root / "stage1" / "latents.csv", index=False, float_format="%.9g")
    rgb, mask = render_batch(WorldMap(256, 0).truth(z[nos]), resolution=128)
    for k, n in enumerate(nos):
        img = np.full_like(rgb[k], 128) if n in grey else rgb[k]
        atomic_write_png(root / "stage2" / "filtered" / f"{n:06d}.png", img)
    (root / "stage2" / "filtered" / "notes.txt").write_text("not an image")
    lineage.seal(root / "stage1")                     # finished upstream stages as far as stage 3 can tell
    lineage.seal(root / "stage2")
    return {"rgb": dict(zip(nos, rgb)), "mask": dict(zip(nos, mask))}


@pytest.fixture
def synth(tmp_path):
    prof = Profile({**load_profile("synthface"), "data_root": str(tmp_path / "runs")})
    data = make_data_root(prof.data_root)
    return prof, data


def run_stage3(prof, settings=None, input_dir=None, out_dir=None, backend=None, show_progress=False):
    """Stage 3 on the profile's paths and parser (``backend`` replaces it), as stages.parsing.main does."""
    block = prof["segmentation"]
    s = settings or ParsingSettings(batch_size=int(block.get("batch_size", 16)),
                                    on_no_face=block.get("on_no_face", "whole_frame"))
    run = ParsingRun(prof.name, int(prof["resolution"]), int(prof["generator"]["z_dim"]), prof.get("world_seed"))
    return run_parsing(run, s, input_dir or prof.stage_dir("stage2") / "filtered",
                       prof.stage_dir("stage1") / "latents.csv", out_dir or prof.stage_dir("stage3"),
                       backend or build_backend(block, s.on_no_face, prof.path), show_progress=show_progress)


def outputs(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted((folder / "segmentation_results").glob("*.png"))}


def test_outputs_names_dtypes_values_and_truth(synth):
    prof, data = synth
    m = run_stage3(prof, ParsingSettings(batch_size=4), show_progress=False)
    out = prof.stage_dir("stage3")
    files = outputs(out)
    kinds = ("face", "parsing", "parsing_visualization", "true_mask")
    assert sorted(files) == sorted(f"{k}_{n:06d}.png" for k in kinds for n in NOS)
    res = out / "segmentation_results"
    for n in NOS:
        parsing = read_png_rgb(res / f"parsing_{n:06d}.png")
        assert parsing.dtype == np.uint8 and parsing.shape == (224, 224) and parsing.max() <= 10
        assert len(np.unique(parsing)) >= 8                      # a face: skin, hair, eyes, brows, nose, lips, ...
        face = read_png_rgb(res / f"face_{n:06d}.png")
        assert face.shape == (224, 224, 3) and np.array_equal(face, resize_bicubic(data["rgb"][n]))
        vis = read_png_rgb(res / f"parsing_visualization_{n:06d}.png")
        assert np.array_equal(vis, overlay(face, parsing))
        true = read_png_rgb(res / f"true_mask_{n:06d}.png")
        assert np.array_equal(true, resize_mask_nearest(data["mask"][n], 224))
    c = m["counts"]
    assert (c["inputs"], c["parsed"], c["written_this_run"], c["already_complete"]) == (6, 6, 6, 0)
    assert m["face_detect_failures"]["count"] == 0 and not m["face_detect_failures"]["detector"]
    assert m["truth"]["mean_iou"] >= 0.88 and m["truth"]["per_class"]["hair"] > 0.9
    assert sum(m["class_pixel_share"].values()) == pytest.approx(1.0)
    assert m["images_per_s"] > 0 and m["backend"]["backend"] == "synthface"
    report = (out / "report.md").read_text()
    assert "IoU against the true masks" in report and "overlays.png" in report
    assert (out / "report" / "overlays.png").is_file() and (out / "report" / "class_pixel_share.png").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["truth"]["mean_iou"] == pytest.approx(m["truth"]["mean_iou"])


def test_resume_skips_finished_images_and_rerun_is_byte_identical(synth, tmp_path, monkeypatch):
    prof, _ = synth
    first = tmp_path / "first"
    run_stage3(prof, ParsingSettings(batch_size=4), out_dir=first, show_progress=False)
    ref = outputs(first)

    # an interrupted run: the writer dies after 19 files (chunk 1 done, image 10 of chunk 2 part-written)
    import stages.parsing as st
    real, calls = st.atomic_write_png, {"n": 0}

    def dying(path, arr):
        calls["n"] += 1
        if calls["n"] > 19:
            raise KeyboardInterrupt
        real(path, arr)
    monkeypatch.setattr(st, "atomic_write_png", dying)
    second = tmp_path / "second"
    with pytest.raises(KeyboardInterrupt):
        run_stage3(prof, ParsingSettings(batch_size=4), out_dir=second, show_progress=False)
    monkeypatch.setattr(st, "atomic_write_png", real)
    assert 0 < len(outputs(second)) < len(ref)
    m = run_stage3(prof, ParsingSettings(batch_size=4), out_dir=second, show_progress=False)
    assert m["counts"]["already_complete"] == 4 and m["counts"]["written_this_run"] == 2
    assert outputs(second) == ref                                   # same bytes as the uninterrupted run

    # a re-run skips everything; a deleted file is rebuilt identically, nothing else is rewritten
    (second / "segmentation_results" / "parsing_000009.png").unlink()
    before = {p: p.stat().st_mtime_ns for p in (second / "segmentation_results").glob("*_000031.png")}
    m = run_stage3(prof, ParsingSettings(batch_size=4), out_dir=second, show_progress=False)
    assert m["counts"]["written_this_run"] == 1 and m["counts"]["already_complete"] == 5
    assert outputs(second) == ref
    assert before == {p: p.stat().st_mtime_ns for p in before}
    # a fresh run into a third folder gives the same bytes
    run_stage3(prof, ParsingSettings(batch_size=4), out_dir=tmp_path / "third", show_progress=False)
    assert outputs(tmp_path / "third") == ref
    # an input whose content changed under the same name (e.g. a new generator) is parsed again
    filtered = prof.stage_dir("stage2") / "filtered"
    (filtered / "000010.png").write_bytes((filtered / "000002.png").read_bytes())
    lineage.seal(prof.stage_dir("stage2"))                          # as a new stage-2 run would
    m = run_stage3(prof, ParsingSettings(batch_size=4), out_dir=second, show_progress=False)
    assert m["counts"]["written_this_run"] == 1
    res = second / "segmentation_results"
    assert (res / "face_000010.png").read_bytes() == ref["face_000002.png"]
    assert (res / "true_mask_000010.png").read_bytes() == ref["true_mask_000010.png"]   # truth follows z_10
    # outputs of images that left the input folder are removed
    (prof.stage_dir("stage2") / "filtered" / "000031.png").unlink()
    lineage.seal(prof.stage_dir("stage2"))
    m = run_stage3(prof, ParsingSettings(batch_size=4), out_dir=second, show_progress=False)
    assert m["counts"]["removed_stale_files"] == 4 and m["counts"]["inputs"] == 5
    assert not list((second / "segmentation_results").glob("*_000031.png"))


def test_corrupt_or_missing_inputs_name_the_file_and_write_nothing(synth, tmp_path):
    prof, _ = synth
    filtered = prof.stage_dir("stage2") / "filtered"
    bad = filtered / "000009.png"
    good = bad.read_bytes()
    bad.write_bytes(good[: len(good) // 3])
    out = tmp_path / "o"
    with pytest.raises(ParsingInputError, match="000009.png"):
        run_stage3(prof, out_dir=out, show_progress=False)
    assert not out.exists()
    atomic_write_png(bad, np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ParsingInputError, match=r"000009.png has shape \(64, 64, 3\)"):
        run_stage3(prof, out_dir=out, show_progress=False)
    bad.write_bytes(good)
    atomic_write_png(filtered / "000077.png", np.zeros((128, 128, 3), np.uint8))      # no latent row for 77
    with pytest.raises(InputError, match="no row for image 000077"):
        run_stage3(prof, out_dir=out, show_progress=False)
    (filtered / "000077.png").unlink()
    lat = prof.stage_dir("stage1") / "latents.csv"
    df = pd.read_csv(lat)
    df["z_3"] = df["z_3"].astype(object)
    df.loc[5, "z_3"] = "oops"
    df.to_csv(lat, index=False)
    with pytest.raises(InputError, match=r"row 6 \(image 000005\), column 'z_3'"):
        run_stage3(prof, out_dir=out, show_progress=False)
    with pytest.raises(ParsingInputError, match="not found"):
        run_stage3(prof, input_dir=tmp_path / "nowhere", out_dir=out, show_progress=False)
    assert not out.exists()


class FakeCropper:
    """A face 'detector': uniform images have no face; else the box (16, 16, 112, 112), bicubic to 224."""

    def crop(self, images):
        out = []
        for im in images:
            if im.std() < 1.0:
                out.append((None, None, None))
            else:
                crop = resize_bicubic(np.ascontiguousarray(im[16:112, 16:112]))
                out.append((normalise(crop[None])[0], (16, 16, 112, 112), crop))
        return out


class FakeParser(nn.Module):
    """Logits from the brightness of each pixel (11 bins): deterministic, batch-independent."""

    def forward(self, x):
        v = x.mean(1, keepdim=True)
        centres = torch.linspace(-2.0, 2.0, 11).view(1, 11, 1, 1)
        return -(v - centres).abs()


def fake_backend(on_no_face):
    return DetectorBackend(FakeCropper(), FakeParser().eval(), lambda lg: lg.argmax(1).to(torch.uint8).numpy(),
                           on_no_face, name="fake")


@pytest.mark.parametrize("on_no_face", ["skip", "whole_frame"])
def test_no_face_behaviours_with_a_fake_detector(tmp_path, on_no_face):
    prof = Profile({**load_profile("synthface"), "data_root": str(tmp_path / "runs")})
    data = make_data_root(prof.data_root, grey=(5, 31))
    s = ParsingSettings(batch_size=4, on_no_face=on_no_face)
    m = run_stage3(prof, s, backend=fake_backend(on_no_face), show_progress=False)
    res = prof.stage_dir("stage3") / "segmentation_results"
    f = m["face_detect_failures"]
    assert f["count"] == 2 and f["detector"] and f[on_no_face] == [5, 31]
    fails = json.loads((prof.stage_dir("stage3") / "face_detect_failures.json").read_text())
    assert fails == {"000005": on_no_face, "000031": on_no_face}
    # detected faces: the crop of the box, the true mask cut by the same box
    assert np.array_equal(read_png_rgb(res / "face_000002.png"), resize_bicubic(data["rgb"][2][16:112, 16:112]))
    assert np.array_equal(read_png_rgb(res / "true_mask_000002.png"),
                          crop_true_mask(data["mask"][2], (16, 16, 112, 112)))
    if on_no_face == "skip":
        assert not list(res.glob("*_000005.png")) and not list(res.glob("*_000031.png"))
        assert m["counts"]["parsed"] == 4 and m["counts"]["skipped_no_face_this_run"] == 2
    else:
        grey = read_png_rgb(res / "face_000005.png")
        assert grey.shape == (224, 224, 3) and (grey == 128).all()          # the whole frame
        assert np.array_equal(read_png_rgb(res / "true_mask_000005.png"), resize_mask_nearest(data["mask"][5], 224))
        assert m["counts"]["parsed"] == 6
    assert "2 of 6 images had no detected face" in (prof.stage_dir("stage3") / "report.md").read_text()
    again = run_stage3(prof, s, backend=fake_backend(on_no_face), show_progress=False)
    assert again["counts"]["written_this_run"] == 0 and again["counts"]["already_complete"] == 6
    assert again["face_detect_failures"]["count"] == 2
    other = "whole_frame" if on_no_face == "skip" else "skip"
    with pytest.raises(ValueError, match="on_no_face"):
        run_stage3(prof, ParsingSettings(batch_size=4, on_no_face=other), backend=fake_backend(other),
                   show_progress=False)


def test_crop_true_mask_pads_outside_the_image():
    mask = np.arange(16, dtype=np.uint8).reshape(4, 4) % 11
    got = crop_true_mask(mask, (-2, 0, 2, 4), size=4)
    assert np.array_equal(got[:, :2], np.zeros((4, 2), np.uint8)) and np.array_equal(got[:, 2:], mask[:, :2])


def test_facexformer_backend_missing_checkpoint_says_where(tmp_path):
    prof = load_profile("celeba256")
    assert prof["segmentation"]["facexformer_checkpoint"] == "checkpoints/celeba256/facexformer.pt"
    prof = Profile({**prof, "segmentation": {**prof["segmentation"],
                                             "facexformer_checkpoint": str(tmp_path / "facexformer.pt")}})
    with pytest.raises(FileNotFoundError) as e:
        build_backend(prof["segmentation"], "whole_frame", prof.path)
    msg = str(e.value)
    assert str(tmp_path / "facexformer.pt") in msg and "checkpoints/celeba256/facexformer.pt" in msg
    assert "state_dict_backbone" in msg and "Nothing is downloaded" in msg
