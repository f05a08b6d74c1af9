"""A run-time second opinion: a second, architecturally different model that looks where the primary may be fooled.

An adversarial patch or perturbation made against one model (PGD at eps=8 takes yolox-nano's person recall to 0)
rarely fools a different architecture as well (nanodet-m-320 keeps 0.54). Running both everywhere doubles the
cost, so the second model only looks at (a) a seeded sample of analysed frames, whole, (b) motion that persists
with no primary detection (something moves that the primary cannot name) and (c) the objects only it has seen, so
they stay tracked. What only it sees is handed to the tracker and, when it lasts, reported as suspected evasion.
"""

from __future__ import annotations

import random
import time as clock
import zlib
from dataclasses import dataclass

import numpy as np

from trustcam.config.schema import SecondOpinionConfig
from trustcam.ingest.frame import Frame
from trustcam.vision.detections import Detections, iou_matrix
from trustcam.vision.detectors.base import Detector
from trustcam.vision.frame_detector import FrameDetector
from trustcam.vision.regions import Box, regions_for

AGREE_IOU = 0.3  # a secondary box overlapping a primary box of the same label this much is the same object


@dataclass
class Review:
    """What the second model said about one frame."""

    secondary_only: Detections  # objects the primary did not report: fed to the tracker as seen by "secondary"
    confirmed: np.ndarray  # bool per primary detection: the second model saw it too ("both")
    ran: bool = False


@dataclass
class _Trace:
    box: tuple[float, float, float, float]
    frames: int  # consecutive analysed frames with motion here and no primary detection


class SecondOpinion:
    """Decides where the second model looks on each frame and splits its detections from the primary's."""

    def __init__(self, config: SecondOpinionConfig, detector: Detector, camera: str, tiling: str = "auto") -> None:
        self.config = config
        self.detector = FrameDetector(detector, tiling)
        self._rng = random.Random(zlib.crc32(camera.encode()))  # seeded per camera: reproducible runs and tests
        self._traces: list[_Trace] = []
        self.calls = 0
        self.seconds = 0.0
        self.checks = 0

    def review(self, frame: Frame, motion_boxes: list[tuple[int, int, int, int]], primary: Detections,
               watched: list[tuple[float, float, float, float]],
               keep: object) -> Review:
        """Run the second model where it is due on ``frame``; ``watched`` are boxes of objects only it has seen,
        ``keep`` filters its raw detections like the primary's (labels, sizes, masks, scores)."""
        persisted = self._persisting(motion_boxes, primary)
        sampled = self.config.sample_share > 0 and self._rng.random() < self.config.sample_share
        nothing = Review(Detections.empty(), np.zeros(len(primary), bool))
        if not sampled and not persisted and not watched:
            return nothing
        start = clock.perf_counter()
        before = self.detector.detector.calls
        if sampled:
            raw = self.detector.detect_full(frame)
        else:
            targets = persisted + list(watched)
            regions = regions_for(targets, frame.width, frame.height, self.detector.detector.input_size)
            raw = self.detector.detect_regions(frame, regions) if regions else Detections.empty()
        self.calls += self.detector.detector.calls - before
        self.seconds += clock.perf_counter() - start
        self.checks += 1
        secondary = keep(raw)  # type: ignore[operator]
        return split(secondary, primary, ran=True)

    def _persisting(self, motion_boxes: list[tuple[int, int, int, int]],
                    primary: Detections) -> list[tuple[float, float, float, float]]:
        """Motion boxes that have stayed (overlapping frame to frame) for ``persist_frames`` analysed frames with no
        primary detection in them; a due trace starts counting again, so a long one is re-checked periodically."""
        due: list[tuple[float, float, float, float]] = []
        traces: list[_Trace] = []
        for m in motion_boxes:
            box = tuple(float(v) for v in m)
            if any(_overlaps(box, tuple(map(float, d))) for d in primary.boxes):
                continue
            previous = max((t.frames for t in self._traces if _overlaps(box, t.box)), default=0)
            trace = _Trace(box, previous + 1)  # type: ignore[arg-type]
            if trace.frames >= self.config.persist_frames:
                due.append(trace.box)
                trace.frames = 0
            traces.append(trace)
        self._traces = traces
        return due


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
