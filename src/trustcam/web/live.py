"""Live view: the latest analysed frame of each camera with its tracked objects and zones drawn.

Camera threads only hand over a reference (no drawing, no encoding): the work happens when someone watches,
and then once per frame whatever the number of viewers (the JPEG is cached by frame sequence number). A camera
with privacy masks has two JPEGs per frame, each encoded only when asked for: the masked one (masks filled black
over the drawing, so a box inside a mask shows nothing either) and the original for users with ``unmasked``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from trustcam.config.schema import CameraConfig
from trustcam.ingest.frame import Frame
from trustcam.vision.privacy import apply_privacy_masks
from trustcam.vision.tracker import TrackedObject

Listener = Callable[[str, Frame, Sequence[TrackedObject]], None]
_BOX = (0, 0, 255)
_ZONE = (0, 200, 255)


@dataclass
class _Latest:
    seq: int
    frame: Frame
    objects: tuple[TrackedObject, ...]
    jpeg: bytes | None = None
    masked_jpeg: bytes | None = None


def draw(image: np.ndarray, objects: Sequence[TrackedObject], zones: dict[str, list[tuple[float, float]]]
         ) -> np.ndarray:
    """A copy of ``image`` with zone polygons (fractions of the frame) and labelled boxes drawn."""
    canvas = image.copy()
    h, w = canvas.shape[:2]
    thickness = max(2, h // 360)  # a 1-px line loses its colour to JPEG chroma subsampling
    scale = max(0.4, h / 1000)
    for name, polygon in zones.items():
        points = np.array([[round(x * w), round(y * h)] for x, y in polygon], np.int32)
        cv2.polylines(canvas, [points], True, _ZONE, thickness, cv2.LINE_AA)
        cv2.putText(canvas, name, (int(points[0][0]) + 3, int(points[0][1]) + 14), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    _ZONE, 1, cv2.LINE_AA)
    for obj in objects:
        x1, y1, x2, y2 = (round(v) for v in obj.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), _BOX, thickness)
        caption = f"{obj.label} #{obj.track_id} {obj.score:.2f}"
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = max(th + base, y1)
        cv2.rectangle(canvas, (x1, ty - th - base), (x1 + tw, ty), _BOX, cv2.FILLED)
        cv2.putText(canvas, caption, (x1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return canvas


class LiveHub:
    """Latest frame per camera; :meth:`jpeg` draws and encodes it at most once per frame."""

    def __init__(self, cameras: dict[str, CameraConfig], quality: int = 75) -> None:
        self.quality = quality
        self._zones = {name: {z: list(cfg.coordinates) for z, cfg in cam.zones.items()}
                       for name, cam in cameras.items()}
        self._privacy = {name: [list(p) for p in cam.privacy_masks] for name, cam in cameras.items()}
        self._latest: dict[str, _Latest] = {}
        self._lock = threading.Lock()
        self._encode_locks = {name: threading.Lock() for name in cameras}
        self._listeners: tuple[Listener, ...] = ()  # live video (web.live_mse): each frame's objects as they come

    @property
    def cameras(self) -> list[str]:
        return list(self._zones)

    def publish(self, camera: str, frame: Frame, objects: Sequence[TrackedObject]) -> None:
        """Called by the camera thread after each analysed frame: O(1), keeps references only."""
        with self._lock:
            previous = self._latest.get(camera)
            self._latest[camera] = _Latest((previous.seq + 1) if previous else 1, frame, tuple(objects))
        for listener in self._listeners:
            listener(camera, frame, objects)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(camera, frame, objects)`` after each :meth:`publish` (in the camera thread: keep it
        short). The MSE live video sends the boxes with the frame's time, the browser draws them over the video."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def seq(self, camera: str) -> int:
        latest = self._latest.get(camera)
        return latest.seq if latest else 0

    def jpeg(self, camera: str, masked: bool = False) -> tuple[int, bytes] | None:
        """(sequence number, JPEG) of the latest frame with boxes and zones, or None before the first frame;
        ``masked``: with the camera's privacy masks filled black (the same as unmasked when it has none)."""
        latest = self._latest.get(camera)
        if latest is None:
            return None
        polygons = self._privacy.get(camera, []) if masked else []
        field = "masked_jpeg" if polygons else "jpeg"
        if getattr(latest, field) is None:
            with self._encode_locks.setdefault(camera, threading.Lock()):
                if getattr(latest, field) is None:  # another viewer may have encoded it meanwhile
                    canvas = draw(latest.frame.bgr, latest.objects, self._zones.get(camera, {}))
                    if polygons:
                        canvas = apply_privacy_masks(canvas, polygons)
                    ok, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                    if not ok:
                        raise OSError(f"camera {camera}: could not encode the live frame as JPEG")
                    setattr(latest, field, encoded.tobytes())
        return latest.seq, getattr(latest, field)
