"""Multi-object tracking: stable IDs across frames with ByteTrack (Roboflow's ``trackers`` package).

One ByteTrack per label keeps a person's ID from jumping to a car that passes in front of them. Tracks
are timed by frame timestamps, so dropped or skipped frames do not shorten how long a lost track is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import supervision as sv
from trackers import ByteTrackTracker

from trustcam.config.schema import TrackerConfig
from trustcam.vision.detections import Detections
from trustcam.vision.labels import COCO_LABELS


@dataclass
class TrackedObject:
    """One confirmed object in the current frame."""

    track_id: int
    label: str
    box: tuple[float, float, float, float]
    score: float
    seen_by: str | None = None  # "primary", "secondary" or "both" with a second opinion (trustcam.pipeline)

    @property
    def foot(self) -> tuple[float, float]:
        """Bottom-centre of the box: where the object stands, the point zones and lines test."""
        return ((self.box[0] + self.box[2]) / 2, self.box[3])


class ObjectTracker:
    def __init__(self, config: TrackerConfig, fps: float) -> None:
        self.config = config
        self.fps = fps
        self._trackers: dict[int, ByteTrackTracker] = {}
        self._ids: dict[tuple[int, int], int] = {}
        self._next_id = 1

    def _tracker(self, class_id: int) -> ByteTrackTracker:
        if class_id not in self._trackers:
            self._trackers[class_id] = ByteTrackTracker(
                lost_track_buffer=max(1, round(self.config.lost_after_s * 30)),
                frame_rate=self.fps,
                track_activation_threshold=0.45,
                minimum_consecutive_frames=self.config.min_frames,
                minimum_iou_threshold=0.1,
                high_conf_det_threshold=0.5,
            )
        return self._trackers[class_id]

    def update(self, dets: Detections, time: float) -> list[TrackedObject]:
        """Associate this frame's detections; returns the confirmed objects seen in it."""
        out: list[TrackedObject] = []
        present = set(int(c) for c in dets.class_ids)
        for class_id in present | set(self._trackers):
            sel = np.flatnonzero(dets.class_ids == class_id)
            sv_dets = sv.Detections(
                xyxy=dets.boxes[sel].astype(np.float32).reshape(-1, 4),
                confidence=dets.scores[sel].astype(np.float32),
                class_id=np.full(len(sel), class_id, int),
            )
            tracked = self._tracker(class_id).update(sv_dets, timestamp=time)
            for box, score, tid in zip(tracked.xyxy, tracked.confidence, tracked.tracker_id, strict=True):
                if tid < 0:
                    continue
                key = (class_id, int(tid))
                if key not in self._ids:
                    self._ids[key] = self._next_id
                    self._next_id += 1
                out.append(
                    TrackedObject(self._ids[key], COCO_LABELS[class_id], tuple(float(v) for v in box), float(score))
                )
        return out
