"""MTCNN face crop (stage-3 pre-processing) on real photographs shipped by scikit-image."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.transforms import InterpolationMode

from segmentation.face_crop import (IMAGENET_MEAN, IMAGENET_STD, FaceCropper, crop_transform, denormalize_to_uint8,
                                    enlarge_box)

from test_facexformer import single_thread  # noqa: F401  (autouse fixture: one torch thread)

skdata = pytest.importorskip("skimage.data", reason="scikit-image ships the test photographs")

# MTCNN (facenet-pytorch 2.6.0 weights) on scikit-image's astronaut photo (512x512, public domain)
ASTRONAUT_BOX = (181.0514, 62.1561, 267.7473, 172.0502)
ASTRONAUT_CROP = (159, 34, 289, 199)
# the same photo downscaled to 256x256 (PIL bicubic), the stage's image size
ASTRONAUT256_BOX = (90.6721, 31.7719, 133.7771, 88.2215)
ASTRONAUT256_CROP = (79, 17, 144, 102)


@pytest.fixture(scope="module")
def astronaut():
    return skdata.astronaut()


@pytest.fixture(scope="module")
def astronaut256(astronaut):
    return np.asarray(Image.fromarray(astronaut).resize((256, 256), Image.BICUBIC))


@pytest.fixture(scope="module")
def lfw_faces():
    """Eight LFW faces (scikit-image's 25x25 subset), bicubic-upscaled to 128x128 RGB."""
    faces = skdata.lfw_subset()[:8]
    return [np.asarray(Image.fromarray((f * 255).round().astype(np.uint8)).convert("RGB")
                       .resize((128, 128), Image.BICUBIC)) for f in faces]


@pytest.fixture(scope="module")
def cropper():
    return FaceCropper(on_no_face="skip")


def reference_crop(image: np.ndarray, box) -> torch.Tensor:
    """The original's steps, spelled out: PIL crop, torchvision bicubic resize, ToTensor, Normalize."""
    pil = Image.fromarray(image).crop(box)
    tf = T.Compose([T.Resize((224, 224), interpolation=InterpolationMode.BICUBIC), T.ToTensor(),
                    T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    return tf(pil)


def test_enlarge_box_margin_clip_and_truncation():
    # width 40, height 80: sides move by 10 and 20, then clip to the 64x96 image and truncate
    assert enlarge_box((10.9, 20.2, 50.9, 100.2), 64, 96) == (0, 0, 60, 96)
    assert enlarge_box((20.5, 30.7, 30.5, 40.7), 64, 96) == (18, 28, 33, 43)   # 18.0, 28.2, 33.0, 43.2
    assert enlarge_box((-30.0, -30.0, -20.0, -20.0), 64, 96) is None          # nothing left inside


def test_astronaut_crop_box_and_tensor(cropper, astronaut):
    (fc,) = cropper.crop_detailed([astronaut])
    assert fc.faces == 1 and not fc.fallback and fc.prob > 0.999
    assert np.abs(fc.detection - ASTRONAUT_BOX).max() < 0.05
    assert fc.box == ASTRONAUT_CROP
    assert fc.box == enlarge_box(fc.detection, 512, 512)
    # exactly the original pre-processing of that box
    assert fc.tensor.shape == (3, 224, 224) and fc.tensor.dtype == torch.float32
    assert torch.equal(fc.tensor, reference_crop(astronaut, fc.box))
    # normalisation: channel statistics follow from the crop's pixels
    pixels = np.asarray(Image.fromarray(astronaut).crop(fc.box).resize((224, 224), Image.BICUBIC), dtype=np.float64)
    expect = (pixels.mean(axis=(0, 1)) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    assert np.abs(fc.tensor.double().mean(dim=(1, 2)).numpy() - expect).max() < 1e-4
    # a skin-toned face fills the centre of the crop
    centre = fc.crop[80:150, 80:150].reshape(-1, 3).mean(axis=0)
    assert centre[0] > centre[1] > centre[2] and centre[0] > 150


def test_saved_crop_is_the_truncated_denormalised_tensor(cropper, astronaut):
    tensor, box, crop = cropper.crop([astronaut])[0]
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    assert np.array_equal(crop, denormalize_to_uint8(tensor))
    bicubic = np.asarray(Image.fromarray(astronaut).crop(box).resize((224, 224), Image.BICUBIC), dtype=np.int16)
    diff = bicubic - crop.astype(np.int16)
    assert diff.min() >= 0 and diff.max() <= 1 and (diff == 0).mean() > 0.5


def test_stage_sized_image(cropper, astronaut256):
    (fc,) = cropper.crop_detailed([astronaut256])
    assert np.abs(fc.detection - ASTRONAUT256_BOX).max() < 0.05
    assert fc.box == ASTRONAUT256_CROP
    assert torch.equal(fc.tensor, reference_crop(astronaut256, fc.box))


@pytest.mark.parametrize("blank", [np.zeros((256, 256, 3), np.uint8), np.full((200, 300, 3), 128, np.uint8)])
def test_no_face(blank):
    skip = FaceCropper(on_no_face="skip")
    assert skip.crop([blank]) == [(None, None, None)]
    assert skip.counts == {"images": 1, "faces_found": 0, "no_face": 1, "whole_frame": 0, "skipped": 1}

    whole = FaceCropper(on_no_face="whole_frame")
    (fc,) = whole.crop_detailed([blank])
    assert fc.box is None and fc.fallback and fc.faces == 0 and fc.detection is None
    assert torch.equal(fc.tensor, crop_transform()(Image.fromarray(blank)))
    assert fc.crop.shape == (224, 224, 3)
    value = float(blank[0, 0, 0]) / 255
    assert np.allclose(fc.tensor.mean(dim=(1, 2)).numpy(), (value - np.array(IMAGENET_MEAN)) / IMAGENET_STD, atol=1e-5)
    assert whole.counts["whole_frame"] == 1 and whole.counts["no_face"] == 1


def test_mixed_batch_matches_one_by_one(astronaut, astronaut256, lfw_faces):
    images = [astronaut256, np.zeros((256, 256, 3), np.uint8), *lfw_faces[:4], astronaut, astronaut256[:, ::-1],
              *lfw_faces[4:]]
    batched = FaceCropper(on_no_face="whole_frame", detect_batch_size=4)
    single = FaceCropper(on_no_face="whole_frame", detect_batch_size=1)
    got = batched.crop_detailed(images)
    assert len(got) == len(images)
    assert got[0].box == ASTRONAUT256_CROP and got[6].box == ASTRONAUT_CROP and got[1].box is None
    assert sum(fc.box is not None for fc in got) == len(images) - 1       # every face is found, in order
    for im, fc in zip(images, got):
        (one,) = single.crop_detailed([im])
        if one.box is None:
            assert fc.box is None
            continue
        assert np.abs(fc.detection - one.detection).max() < 1e-3
        assert np.abs(np.subtract(fc.box, one.box)).max() <= 1
        if fc.box == one.box:
            assert torch.equal(fc.tensor, one.tensor)
    assert batched.counts == {"images": 12, "faces_found": 11, "no_face": 1, "whole_frame": 1, "skipped": 0}


def test_face_boxes_past_the_border_are_clipped(cropper, lfw_faces):
    results = cropper.crop_detailed(lfw_faces)
    outside = [fc for fc in results if fc.detection.min() < 0 or fc.detection.max() > 128]
    assert outside, "the upscaled LFW faces fill the frame, so some boxes extend past it"
    for fc in results:
        x1, y1, x2, y2 = fc.box
        assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 128


def test_bad_input_and_settings():
    with pytest.raises(ValueError, match="on_no_face"):
        FaceCropper(on_no_face="crash")
    c = FaceCropper()
    with pytest.raises(ValueError, match="image 1"):
        c.crop([np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8)])
    with pytest.raises(ValueError, match="image 0"):
        c.crop([np.zeros((64, 64, 3), np.float32)])
    # PIL images are accepted too
    assert c.crop([Image.new("RGB", (64, 64))]) == [(None, None, None)]
