"""Frame.crop converts only a region's pixels and matches the full-frame conversion."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from trustcam.ingest.frame import Frame
from trustcam.ingest.source import VideoSource


@pytest.fixture(scope="module")
def decoded(person_video: Path) -> Frame:
    return next(f for f in VideoSource(str(person_video)).frames() if f.index == 40)


@pytest.mark.parametrize("box", [(0, 0, 416, 416), (101, 37, 517, 432), (351, 15, 768, 432), (3, 5, 10, 14)])
def test_crop_matches_full_conversion(decoded: Frame, box: tuple[int, int, int, int]) -> None:
    fresh = Frame(decoded._source, 0, 0.0)  # no cached full conversion: takes the YUV crop path
    crop = fresh.crop(box)
    assert "bgr" not in fresh.__dict__
    full = Frame(decoded._source, 0, 0.0).bgr[box[1] : box[3], box[0] : box[2]]
    assert crop.shape == full.shape
    assert np.abs(crop.astype(int) - full.astype(int)).mean() < 1.5  # two BT.601 implementations


def test_crop_of_scaled_or_still_frame_uses_bgr(decoded: Frame) -> None:
    scaled = Frame(decoded._source, 0, 0.0, size=(384, 216))
    assert scaled.crop((0, 0, 100, 50)).shape == (50, 100, 3)
    image = np.zeros((50, 60, 3), np.uint8)
    assert Frame.from_image(image).crop((10, 10, 20, 30)).shape == (20, 10, 3)


def test_scaled_shrinks_yuv_without_converting_the_frame(decoded: Frame) -> None:
    fresh = Frame(decoded._source, 0, 0.0)
    small = fresh.scaled((320, 180))
    assert small.shape == (180, 320, 3) and small.dtype == np.uint8
    assert "bgr" not in fresh.__dict__  # the full-size conversion was never made
    reference = cv2.resize(Frame(decoded._source, 0, 0.0).bgr, (320, 180), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - reference.astype(int)).mean() < 2.0  # swscale vs OpenCV, both anti-aliased


def test_scaled_image_is_area_resized(decoded: Frame) -> None:
    image = decoded.bgr
    expected = cv2.resize(image, (200, 100), interpolation=cv2.INTER_AREA)
    assert np.array_equal(Frame.from_image(image).scaled((200, 100)), expected)
