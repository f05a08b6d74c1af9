"""Frame.crop converts only a region's pixels and matches the full-frame conversion."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from trustcam.ingest.frame import Frame, area_resize
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


def test_grey_images_are_made_once_per_height(decoded: Frame) -> None:
    fresh = Frame(decoded._source, 0, 0.0)
    assert fresh.gray(120) is fresh.gray(120)  # tamper and drift share one
    assert fresh.gray(180).shape == (180, 320)


def test_grey_of_a_1080p_frame_is_fast_and_matches_the_area_resize(decoded: Frame) -> None:
    """1920x1080 to 213x120 is a 9.01 x 9 shrink, which OpenCV's area resize does ~5x slower than a whole factor:
    the 3 right-most columns are left out instead, and the result stays the same picture."""
    big = cv2.resize(decoded.bgr, (1920, 1080), interpolation=cv2.INTER_CUBIC)
    frame = Frame(av.VideoFrame.from_ndarray(big, format="bgr24").reformat(format="yuv420p"), 0, 0.0)
    luma = frame._luma()
    exact = cv2.resize(luma, (213, 120), interpolation=cv2.INTER_AREA)
    grey = frame.gray(120)
    assert grey.shape == exact.shape == (120, 213)
    assert np.abs(grey.astype(int) - exact.astype(int)).mean() < 1.0
    assert np.array_equal(grey, cv2.resize(luma[:, :1917], (213, 120), interpolation=cv2.INTER_AREA))
    assert np.array_equal(frame.gray(180), cv2.resize(luma, (320, 180), interpolation=cv2.INTER_AREA))  # whole 6x


def test_area_resize_keeps_the_whole_picture_when_the_factor_is_far_from_whole() -> None:
    image = np.random.default_rng(1).integers(0, 255, (432, 768), np.uint8)
    assert np.array_equal(area_resize(image, 213, 120), cv2.resize(image, (213, 120), interpolation=cv2.INTER_AREA))
