"""Live view: the latest analysed frame of each camera with its tracked objects and zones drawn.

Camera threads only hand over a reference (no drawing, no encoding): the work happens when someone watches,
and then once per frame whatever the number of viewers (the JPEG is cached by frame sequence number). A camera
with privacy masks or face blurring has one JPEG per variant a viewer needs (``Redaction.key``), each encoded only
when asked for: e.g. the masked one (masks filled black over the drawing, so a box inside a mask shows nothing
either), the one with faces blurred for users without ``biometrics``, and the original. Faces are found once per
frame, on the camera's own pixels, and stay blurred where they were in the last frames watched (``FaceTrail``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from trustcam.config.schema import CameraConfig
from trustcam.ingest.frame import Frame
from trustcam.vision.face_blur import Box, FaceTrail
from trustcam.vision.privacy import ORIGINAL, Redaction, apply_redaction
from trustcam.vision.tracker import TrackedObject

Listener = Callable[[str, Frame, Sequence[TrackedObject]], None]
_BOX = (0, 0, 255)
_ZONE = (0, 200, 255)


@dataclass
class _Latest:
    seq: int
    frame: Frame
    objects: tuple[TrackedObject, ...]
    jpegs: dict[str, bytes] = field(default_factory=dict)  # by Redaction.key
    faces: list[Box] | None = None  # blurred in this frame (this frame's faces and the trail's)
    faces_found: bool = False


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
        self._trails = {name: FaceTrail(hold=3) for name in cameras}
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

    def jpeg(self, camera: str, view: Redaction = ORIGINAL) -> tuple[int, bytes] | None:
        """(sequence number, JPEG) of the latest frame with boxes and zones, or None before the first frame;
        redacted as ``view`` says (``trustcam.vision.privacy.redaction`` of the viewer and camera)."""
        latest = self._latest.get(camera)
        if latest is None:
            return None
        if view.key not in latest.jpegs:
            with self._encode_locks.setdefault(camera, threading.Lock()):
                if view.key not in latest.jpegs:  # another viewer may have encoded it meanwhile
                    zones = self._zones.get(camera, {})
                    canvas = apply_redaction(latest.frame.bgr, view, lambda image: draw(image, latest.objects, zones),
                                             faces=lambda image: self._faces(camera, latest, image))
                    ok, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                    if not ok:
                        raise OSError(f"camera {camera}: could not encode the live frame as JPEG")
                    latest.jpegs[view.key] = encoded.tobytes()
        return latest.seq, latest.jpegs[view.key]

    def _faces(self, camera: str, latest: _Latest, image: np.ndarray) -> list[Box] | None:
        """The face boxes to blur in the latest frame: found once per frame (under the camera's encode lock), with
        those of the last frames watched; None (no detector: the whole frame is blurred)."""
        if not latest.faces_found:
            latest.faces = self._trails.setdefault(camera, FaceTrail(hold=3)).boxes(image)
            latest.faces_found = True
        return latest.faces
