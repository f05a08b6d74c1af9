"""The live view really draws: the JPEG the MJPEG stream serves shows the zone outline and the object's box on
a real decoded frame, and leaves the rest of the picture alone."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from trustcam.config.schema import CameraConfig
from trustcam.ingest.frame import Frame
from trustcam.vision.tracker import TrackedObject
from trustcam.web.live import _BOX, _ZONE, LiveHub

ZONE = [(0.40, 0.55), (0.90, 0.55), (0.90, 0.95), (0.40, 0.95)]


def _first_frame(video: Path) -> np.ndarray:
    capture = cv2.VideoCapture(str(video))
    ok, image = capture.read()
    capture.release()
    assert ok, f"cannot decode {video}"
    return image


def _colour_along(image: np.ndarray, a: tuple[int, int], b: tuple[int, int], colour: tuple[int, int, int]
                  ) -> np.ndarray:
    """Median BGR along the segment a→b (its middle 60%, away from corners and captions), taking at each point the
    pixel of its 3×3 neighbourhood nearest ``colour`` (a thin line is blurred by JPEG and anti-aliasing)."""
    picked = []
    for t in np.linspace(0.2, 0.8, 40):
        x, y = round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t)
        patch = image[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).astype(np.float32)
        picked.append(patch[np.abs(patch - colour).sum(axis=1).argmin()])
    return np.median(np.array(picked), axis=0)


def test_live_jpeg_has_zone_outline_and_boxes(person_video: Path) -> None:
    raw = _first_frame(person_video)
    h, w = raw.shape[:2]
    camera = CameraConfig(source=str(person_video), zones={"table": {"coordinates": [list(p) for p in ZONE]}})
    hub = LiveHub({"office": camera})
    box = (0.10 * w, 0.20 * h, 0.30 * w, 0.70 * h)
    hub.publish("office", Frame(raw, 0, 0.0), [TrackedObject(7, "person", box, 0.91)])
    _, jpeg = hub.jpeg("office")
    shown = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert shown.shape == raw.shape

    corners = [(round(x * w), round(y * h)) for x, y in ZONE]
    for a, b in zip(corners, corners[1:] + corners[:1], strict=True):
        drawn, before = _colour_along(shown, a, b, _ZONE), _colour_along(raw, a, b, _ZONE)
        assert np.abs(drawn - _ZONE).max() < 60, f"zone edge {a}→{b} is {drawn}, not the zone colour {_ZONE}"
        assert np.abs(drawn - before).max() > 60, f"zone edge {a}→{b} looks like the raw frame"
    x1, y1, x2, y2 = (round(v) for v in box)
    for a, b in (((x2, y1), (x2, y2)), ((x1, y2), (x2, y2)), ((x1, y1 + 40), (x1, y2))):  # right, bottom, left
        drawn = _colour_along(shown, a, b, _BOX)
        assert np.abs(drawn - _BOX).max() < 60, f"box edge {a}→{b} is {drawn}, not the box colour {_BOX}"
    # away from every drawing, the picture is the camera's own (up to JPEG loss)
    away = np.s_[round(0.05 * h):round(0.15 * h), round(0.55 * w):round(0.85 * w)]
    assert np.abs(shown[away].astype(np.int16) - raw[away]).mean() < 4
