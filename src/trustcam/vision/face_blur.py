"""Faces blurred in what users without the ``biometrics`` permission are shown (live, snapshots, clips).

Like privacy masks (``trustcam.vision.privacy``), blurring happens only when footage is *shown*, on a copy: the
vault keeps the original. Each face box YuNet finds is enlarged by ``ENLARGE`` (hair, ears, jaw line) and reduced
to at most ``GRID`` x ``GRID`` samples, then smoothed back to size: whatever the resolution, no more than 64 colour
samples of a face survive, too few for a person or a face recogniser to tell who it is.

Fail closed: when the face detector cannot be loaded (model missing or altered), the *whole* frame is blurred, never
shown as recorded. A face YuNet misses in one video frame stays blurred where it was in the frames just before
(:class:`FaceTrail`); faces it never finds (far, turned away, tiny) are not blurred — see docs/security.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from trustcam.vision.faces import FaceRecognizer

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels, inside the image
ENLARGE = 0.2  # the box grows by this fraction of its size on each side
GRID = 8  # samples across a blurred face
DETECT_SCORE = 0.5  # below recognition's 0.6: a missed face is shown, a false one only blurs a patch
DETECT_MAX_SIDE = 960  # detection scale: small faces in a 1080p frame are still found
RETRY_S = 60.0  # after the detector failed to load, try again this long after (not at every frame)

_lock = threading.Lock()
_detector: FaceRecognizer | None = None
_failed_at: float | None = None
factory: Callable[[], FaceRecognizer] = lambda: FaceRecognizer(score_threshold=DETECT_SCORE,  # noqa: E731
                                                                max_side=DETECT_MAX_SIDE)


def detector() -> FaceRecognizer | None:
    """The process's one face detector for blurring, created at first use (thread-safe); None while it cannot be
    loaded (logged once per retry), so callers blur the whole frame instead."""
    global _detector, _failed_at
    if _detector is not None:
        return _detector
    with _lock:
        if _detector is None and (_failed_at is None or time.monotonic() - _failed_at >= RETRY_S):
            try:
                _detector = factory()
                _failed_at = None
            except Exception as exc:  # FaceError, dlib/OpenCV errors: any of them means no detector
                _failed_at = time.monotonic()
                log.error("face blurring cannot detect faces (%s); whole frames are blurred for users without the "
                          "'biometrics' permission until it can", exc)
    return _detector


def reset() -> None:
    """Forget the detector (tests, or after `trustcam models install`): the next use creates it again."""
    global _detector, _failed_at
    with _lock:
        _detector, _failed_at = None, None


def enlarge(box: Sequence[float], width: int, height: int, factor: float = ENLARGE) -> Box:
    """``box`` grown by ``factor`` of its size on each side, in whole pixels, clipped to the image."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * factor, (y2 - y1) * factor
    return (max(0, int(x1 - dx)), max(0, int(y1 - dy)), min(width, int(np.ceil(x2 + dx))),
            min(height, int(np.ceil(y2 + dy))))


def face_boxes(image: np.ndarray) -> list[Box] | None:
    """The enlarged boxes of every face in a BGR image; None when no detector is available."""
    found = detector()
    if found is None:
        return None
    h, w = image.shape[:2]
    return [enlarge(face.box, w, h) for face in found.faces_in(image)]


def blur_region(image: np.ndarray, box: Box) -> None:
    """Blur ``box`` of ``image`` in place: down to ``GRID`` samples across, back up smoothly, then a Gaussian so
    no edge of the sample grid is left."""
    x1, y1, x2, y2 = box
    if x2 - x1 < 2 or y2 - y1 < 2:
        return
    region = image[y1:y2, x1:x2]
    h, w = region.shape[:2]
    scale = GRID / max(w, h)
    small = cv2.resize(region, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    smooth = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    sigma = max(w, h) / GRID / 2
    image[y1:y2, x1:x2] = cv2.GaussianBlur(smooth, (0, 0), sigmaX=sigma, sigmaY=sigma)


def blur_boxes(image: np.ndarray, boxes: Sequence[Box] | None) -> np.ndarray:
    """A copy of ``image`` with each box blurred; ``None`` (no detector) blurs the whole image (fail closed)."""
    blurred = image.copy()
    h, w = blurred.shape[:2]
    for box in boxes if boxes is not None else [(0, 0, w, h)]:
        blur_region(blurred, box)
    return blurred


def blur_faces(image: np.ndarray) -> np.ndarray:
    """A copy of a BGR image with every face blurred (the whole image if faces cannot be detected)."""
    return blur_boxes(image, face_boxes(image))


class FaceTrail:
    """Face boxes of a video's recent frames: each frame also blurs where faces were in the last ``hold`` frames,
    so a face the detector misses for a frame or two (motion blur, a turn of the head) is not shown."""

    def __init__(self, hold: int = 5) -> None:
        self._recent: deque[list[Box]] = deque(maxlen=hold)

    def boxes(self, image: np.ndarray) -> list[Box] | None:
        """Faces of this frame and of the frames held; None when no detector is available."""
        found = face_boxes(image)
        if found is None:
            return None
        self._recent.append(found)
        return [box for frame in self._recent for box in frame]
