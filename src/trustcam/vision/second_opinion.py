"""A run-time second opinion: a second, architecturally different model that looks where the primary may be fooled.

An adversarial patch or perturbation made against one model (PGD at eps=8 takes yolox-nano's person recall to 0)
rarely fools a different architecture as well (nanodet-m-320 keeps 0.54). Running both everywhere doubles the
cost, so the second model only looks at (a) a seeded sample of analysed frames, whole at its own input size (tiles
only with ``sample_tiles``), (b) motion that persists with no primary detection (something moves that the primary
cannot name), (c) the objects only it has seen, so they stay tracked, and (d) on every analysed frame, motion in
zones marked ``high_security`` (the door, the safe), where waiting for a sample or for motion to persist is too
late. What only it sees is handed to the tracker and, when it lasts, reported as suspected evasion.
"""

from __future__ import annotations

import random
import time as clock
import zlib
from dataclasses import dataclass

import numpy as np

from trustcam.config.schema import Polygon, SecondOpinionConfig
from trustcam.ingest.frame import Frame
from trustcam.vision.detections import Detections, iou_matrix
from trustcam.vision.detectors.base import Detector
from trustcam.vision.frame_detector import FrameDetector
from trustcam.vision.motion import polygon_mask
from trustcam.vision.regions import Box, regions_for

AGREE_IOU = 0.3  # a secondary box overlapping a primary box of the same label this much is the same object
MAX_BACKOFF = 8  # persisting motion the second model keeps finding nothing in is re-checked at most this many times
# less often (every 8 x persist_frames analysed frames, 8 s at 5 fps with the defaults)


@dataclass
class Review:
    """What the second model said about one frame."""

    secondary_only: Detections  # objects the primary did not report: fed to the tracker as seen by "secondary"
    confirmed: np.ndarray  # bool per primary detection: the second model saw it too ("both")
    ran: bool = False


@dataclass
class _Trace:
    box: tuple[float, float, float, float]
    frames: int  # consecutive analysed frames with motion here and no primary detection since its last check
    wait: int  # frames before it is checked: persist_frames, doubled each time the second model found nothing here
    idle: int = 0  # analysed frames since motion was last seen here (kept for ``wait`` frames: flicker keeps its wait)
    checked: tuple[float, float, float, float] | None = None  # its box when the second model last looked


class SecondOpinion:
    """Decides where the second model looks on each frame and splits its detections from the primary's."""

    def __init__(self, config: SecondOpinionConfig, detector: Detector, camera: str, tiling: str = "auto",
                 high_security: list[Polygon] | None = None) -> None:
        self.config = config
        self.high_security = list(high_security or [])  # polygons (fractions of the frame) checked on every frame
        self._inside: np.ndarray | None = None  # bool mask of the high_security zones at the frame's size
        self.detector = FrameDetector(detector, tiling)
        self._rng = random.Random(zlib.crc32(camera.encode()))  # seeded per camera: reproducible runs and tests
        self._traces: list[_Trace] = []
        self.calls = 0
        self.seconds = 0.0
        self.checks = 0
        self.zone_checks = 0  # frames on which motion in a high_security zone was checked
        self._found: list[tuple[float, float, float, float]] = []  # its own finds of the last check, looked at again

    def review(self, frame: Frame, motion_boxes: list[tuple[int, int, int, int]], primary: Detections,
               watched: list[tuple[float, float, float, float]],
               keep: object) -> Review:
        """Run the second model where it is due on ``frame``; ``watched`` are boxes of objects only it has seen,
        ``keep`` filters its raw detections like the primary's (labels, sizes, masks, scores)."""
        due = self._persisting(motion_boxes, primary)
        persisted = [t.box for t in due]
        sampled = self.config.sample_share > 0 and self._rng.random() < self.config.sample_share
        guarded = self._in_high_security(frame, motion_boxes)
        found, self._found = self._found, []
        nothing = Review(Detections.empty(), np.zeros(len(primary), bool))
        if not sampled and not persisted and not watched and not guarded and not found:
            return nothing
        start = clock.perf_counter()
        before = self.detector.detector.calls
        if sampled:  # untiled by default: tiles cost ~7 calls a sample on 768x432 and were most of the defence's CPU
            raw = self.detector.detect_full(frame) if self.config.sample_tiles else self.detector.detector.detect(
                frame.bgr)
        else:
            targets = persisted + list(watched) + guarded + found
            regions = regions_for(targets, frame.width, frame.height, self.detector.detector.input_size)
            raw = self.detector.detect_regions(frame, regions) if regions else Detections.empty()
        self.calls += self.detector.detector.calls - before
        self.seconds += clock.perf_counter() - start
        self.checks += 1
        self.zone_checks += bool(guarded)
        secondary = keep(raw)  # type: ignore[operator]
        self._back_off(due, secondary)
        review = split(secondary, primary, ran=True)
        # the tracker confirms an object seen on consecutive frames: without a second look on the next frame, a find
        # of a persisting-motion check (every persist_frames) never became a track (18 s late on the person clip)
        self._found = [tuple(map(float, b)) for b in review.secondary_only.boxes]  # type: ignore[misc]
        return review

    def _in_high_security(self, frame: Frame,
                          motion_boxes: list[tuple[int, int, int, int]]) -> list[tuple[float, float, float, float]]:
        """The motion boxes touching a ``high_security`` zone (none, at no cost, when the camera has no such zone)."""
        if not self.high_security or not motion_boxes:
            return []
        if self._inside is None or self._inside.shape != (frame.height, frame.width):
            self._inside = polygon_mask(self.high_security, frame.width, frame.height) == 0
        inside = self._inside
        return [tuple(float(v) for v in m) for m in motion_boxes  # type: ignore[misc]
                if inside[max(0, m[1]):max(0, m[3]), max(0, m[0]):max(0, m[2])].any()]

    def _persisting(self, motion_boxes: list[tuple[int, int, int, int]], primary: Detections) -> list[_Trace]:
        """Motion that has stayed (overlapping frame to frame) for its trace's wait (``persist_frames`` at first)
        with no primary detection in it; a due trace starts counting again, so a long one is re-checked periodically."""
        due: list[_Trace] = []
        traces: list[_Trace] = []
        continued: set[int] = set()
        for m in motion_boxes:
            box = tuple(float(v) for v in m)
            if any(_overlaps(box, tuple(map(float, d))) for d in primary.boxes):
                continue
            before = [t for t in self._traces if _overlaps(box, t.box)]
            continued.update(id(t) for t in before)
            longest = max(before, key=lambda t: t.wait, default=None)
            trace = _Trace(box, max((t.frames for t in before), default=0) + 1,  # type: ignore[arg-type]
                           longest.wait if longest else self.config.persist_frames,
                           checked=longest.checked if longest else None)
            if trace.frames >= trace.wait:
                due.append(trace)
                trace.frames = 0
            traces.append(trace)
        # motion that flickers off for a few frames keeps its count and its back-off instead of starting afresh
        for t in self._traces:
            if id(t) not in continued and t.idle + 1 < t.wait:
                traces.append(_Trace(t.box, t.frames, t.wait, t.idle + 1, t.checked))
        self._traces = traces
        return due

    def _back_off(self, due: list[_Trace], secondary: Detections) -> None:
        """Double the wait of a trace that stayed in place since its last check and where the second model again
        found nothing (swaying plants, shadows, light: the call a second they cost was most of the defence's CPU on
        quiet scenes), up to :data:`MAX_BACKOFF` x ``persist_frames``. Motion that moved (someone walking in, seen
        only in part at first) or where it found something is checked again after ``persist_frames``."""
        first = self.config.persist_frames
        for trace in due:
            found = any(_overlaps(trace.box, tuple(map(float, d))) for d in secondary.boxes)
            still = trace.checked is not None and float(
                iou_matrix(np.array([trace.box], np.float32), np.array([trace.checked], np.float32))[0, 0]) >= 0.5
            trace.wait = min(2 * trace.wait, MAX_BACKOFF * first) if still and not found else first
            trace.checked = trace.box


def split(secondary: Detections, primary: Detections, *, ran: bool = True) -> Review:
    """Secondary detections with no same-label primary box at IoU > :data:`AGREE_IOU`, and which primary boxes
    the secondary confirmed."""
    confirmed = np.zeros(len(primary), bool)
    if len(secondary) == 0:
        return Review(secondary, confirmed, ran)
    if len(primary) == 0:
        return Review(secondary, confirmed, ran)
    iou = iou_matrix(secondary.boxes, primary.boxes)
    iou[secondary.class_ids[:, None] != primary.class_ids[None, :]] = 0.0
    agree = iou > AGREE_IOU
    confirmed = agree.any(axis=0)
    return Review(secondary.select(np.flatnonzero(~agree.any(axis=1))), confirmed, ran)


def best_score_in(detector: Detector, frame: Frame, box: tuple[float, float, float, float],
                  label_id: int) -> float | None:
    """The primary model's best score for ``label_id`` around ``box`` at a near-zero threshold: the evidence of how
    sure it was that nothing is there. None when the detector cannot be asked (a supervised process)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    pad_x, pad_y = (x2 - x1) // 2, (y2 - y1) // 2
    region: Box = (max(0, x1 - pad_x), max(0, y1 - pad_y), min(frame.width, x2 + pad_x), min(frame.height, y2 + pad_y))
    try:
        dets = detector.detect(frame.crop(region), score_threshold=0.01)
    except Exception:  # evidence is best effort: the alert goes out without it
        return None
    scores = dets.scores[dets.class_ids == label_id]
    return round(float(scores.max()), 4) if len(scores) else 0.0


def _overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
