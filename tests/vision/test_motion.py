"""Motion detection with and without mask polygons: masked motion is ignored, and the changed fraction counts only
the pixels that are watched (the unmasked case skips the mask work but must measure the same)."""

from __future__ import annotations

import numpy as np
import pytest

from trustcam.config.schema import MotionConfig
from trustcam.ingest.frame import Frame
from trustcam.vision.motion import MotionDetector

SIZE = (640, 360)


def _scene(square_at: tuple[int, int] | None) -> Frame:
    """A textured grey scene (so the blur keeps edges), with a bright 60 px square at ``square_at`` (x, y)."""
    rng = np.random.default_rng(3)
    image = np.repeat(rng.integers(60, 90, (SIZE[1], SIZE[0], 1), dtype=np.uint8), 3, axis=2)
    if square_at is not None:
        x, y = square_at
        image[y:y + 60, x:x + 60] = 230
    return Frame.from_image(image)


def _motion(config: MotionConfig, square_at: tuple[int, int]) -> tuple[list[tuple[int, int, int, int]], float]:
    detector = MotionDetector(config)
    assert detector.detect(_scene(None)).recalibrated == "startup"
    result = detector.detect(_scene(square_at))
    assert result.recalibrated is None
    return result.boxes, result.changed_fraction


@pytest.mark.parametrize("square_at", [(50, 50), (500, 250)])
def test_motion_without_mask_finds_the_square(square_at: tuple[int, int]) -> None:
    boxes, fraction = _motion(MotionConfig(), square_at)
    assert len(boxes) == 1
    x1, y1, x2, y2 = boxes[0]
    assert x1 <= square_at[0] + 5 and y1 <= square_at[1] + 5 and x2 >= square_at[0] + 55 and y2 >= square_at[1] + 55
    assert fraction == pytest.approx(60 * 60 / (SIZE[0] * SIZE[1]), rel=0.25)


def test_motion_in_the_masked_half_is_ignored_and_not_counted() -> None:
    left_half = MotionConfig(mask=[[(0, 0), (0.5, 0), (0.5, 1), (0, 1)]])
    boxes, fraction = _motion(left_half, (50, 50))
    assert boxes == [] and fraction == 0.0
    boxes, fraction = _motion(left_half, (500, 250))
    assert len(boxes) == 1
    # the same square, measured against the watched half only
    assert fraction == pytest.approx(2 * 60 * 60 / (SIZE[0] * SIZE[1]), rel=0.25)
