"""Frame.crop converts only a region's pixels and matches the full-frame conversion."""

from __future__ import annotations

from pathlib import Path

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
