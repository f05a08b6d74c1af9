"""One camera's analysis: motion → detection on regions → filters → tracking → rules → events.

The detector only runs where something moves (or where a tracked object is), plus a periodic whole-frame
pass that finds objects standing still since before motion detection could see them. Still objects are
kept alive between re-checks instead of being re-detected every frame.
"""

from __future__ import annotations

import time as clock
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trustcam.alerts.model import Alert, Severity
from trustcam.bus import Bus
from trustcam.config.schema import CameraConfig, ObjectsConfig, Settings
from trustcam.events.builder import EventBuilder, SnapshotStore
from trustcam.events.model import MotionWhileBlind, SceneChanged
from trustcam.ingest.frame import Frame
from trustcam.phase import camera_phase
from trustcam.rules.engine import RuleEngine
from trustcam.vision.detections import Detections, iou_matrix
from trustcam.vision.detectors.base import Detector
from trustcam.vision.detectors.failover import DetectorFailure
from trustcam.vision.frame_detector import FrameDetector
from trustcam.vision.labels import COCO_LABELS
from trustcam.vision.motion import MotionDetector, polygon_mask
from trustcam.vision.regions import Box, regions_for
from trustcam.vision.second_opinion import Review, SecondOpinion, best_score_in
from trustcam.vision.tracker import ObjectTracker, TrackedObject

if TYPE_CHECKING:
    from trustcam.vision.face_tracks import FaceModels, FaceTracks

EVASION_SUSPECTED = "evasion_suspected"  # alert kind: an object only the second model sees, for a while


@dataclass
class PipelineStats:
    frames: int = 0
    frames_detected: int = 0
    detector_calls: int = 0
    detector_seconds: float = 0.0
    full_pass_calls: int = 0  # of detector_calls: whole frame + tiles, at start and every full_frame_every_s
    whole_frame_calls: int = 0  # the whole frame alone: motion too spread for regions, or after a scene change
    scene_changes: int = 0
    events: int = 0
    blind_frames: int = 0
    second_opinion_checks: int = 0  # frames the second model looked at
    second_opinion_zone_checks: int = 0  # of which with motion in a high_security zone
    second_opinion_calls: int = 0
    second_opinion_seconds: float = 0.0
    secondary_only_detections: int = 0  # detections the second model made that no primary detection matched
    disagreements: int = 0  # times a track became seen by the second model alone (each stretch counts once)
    evasion_alerts: int = 0
    first_time: float | None = None  # frame times of the first and the last analysed frame: the span figures
    last_time: float | None = None  # per hour are over

    @property
    def span_s(self) -> float:
        return self.last_time - self.first_time if self.first_time is not None and self.last_time is not None \
            else 0.0

    @property
    def detect_fraction(self) -> float:
        return self.frames_detected / self.frames if self.frames else 0.0


@dataclass
class _Known:
    obj: TrackedObject
    last_seen: float
    last_checked: float
    still: bool = False  # hardly moved between its last two sightings


@dataclass
class FrameResult:
    objects: list[TrackedObject] = field(default_factory=list)
    regions: list[Box] = field(default_factory=list)
    motion_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)


def _overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


class CameraPipeline:
    def __init__(self, name: str, camera: CameraConfig, settings: Settings, detector: Detector, bus: Bus,
                 snapshot_dir: Path | None, snapshot_store: SnapshotStore | None = None,
                 secondary: Detector | None = None, faces: FaceModels | None = None) -> None:
        self.name = name
        self.camera = camera
        self.settings = settings
        self.bus = bus
        self.detector = FrameDetector(detector, settings.detector.tiling)
        self.motion = MotionDetector(camera.motion)
        self.tracker = ObjectTracker(settings.tracker, camera.detect.fps)
        self.events = EventBuilder(
            name, camera.objects, bus, model_name=detector.name, model_sha256=detector.sha256,
            snapshot_dir=snapshot_dir, lost_after_s=settings.tracker.lost_after_s, snapshot_store=snapshot_store,
        )
        self.stats = PipelineStats()
        self._rules: RuleEngine | None = None
        self._object_mask: np.ndarray | None = None
        self._known: dict[int, _Known] = {}
        self._last_full: float | None = None
        self._full_wait = camera.detect.full_frame_every_s * _phase(name)  # until the first periodic pass
        self._previous_time: float | None = None
        self._unconfirmed: list[tuple[float, float, float, float]] = []
        self._quiet: list[tuple[tuple[float, float, float, float], float]] = []
        self.second_opinion: SecondOpinion | None = None
        self.opinion_config = settings.second_opinion_for(camera)
        if self.opinion_config.enabled:
            if secondary is None:
                raise ValueError("the second opinion is enabled but no second detector was given; build it "
                                 "with trustcam.service.build_second_opinion(settings)")
            self.second_opinion = SecondOpinion(
                self.opinion_config, secondary, name, settings.detector.tiling,
                high_security=[zone.coordinates for zone in camera.zones.values() if zone.high_security])
        self._sources: dict[int, str] = {}  # track → which model saw it last ("primary", "secondary", "both")
        self._disagree: dict[int, int] = {}  # track → consecutive analysed frames only the second model saw it
        self._evasion_alerted: set[int] = set()
        self.faces: FaceTracks | None = None  # only with faces.enabled: nothing face-related exists otherwise
        if camera.faces.enabled:
            if faces is None:
                raise ValueError(f"camera {name}: faces.enabled but no face models were given; build them with "
                                 "trustcam.service.build_face_models(settings, engine)")
            from trustcam.storage.faces import threshold_for
            from trustcam.vision.face_tracks import FaceTracks

            self.faces = FaceTracks(camera, faces, threshold_for(settings.data_dir, camera.faces.target_fmr),
                                    forget_after_s=settings.tracker.lost_after_s)

    def _setup(self, frame: Frame) -> RuleEngine:
        if self._rules is None:
            self._rules = RuleEngine(self.camera, frame.width, frame.height)
            self._object_mask = polygon_mask(self.camera.objects.mask, frame.width, frame.height)
        return self._rules

    def process(self, frame: Frame) -> FrameResult:
        rules = self._setup(frame)
        now = frame.time
        self.stats.frames += 1
        if self.stats.first_time is None:
            self.stats.first_time = now
        self.stats.last_time = now
        motion = self.motion.detect(frame)
        if motion.recalibrated in ("global_change", "brightness_jump"):
            self.stats.scene_changes += 1
            self.bus.publish(SceneChanged(self.name, now, motion.recalibrated, motion.changed_fraction))

        self._known = {k: v for k, v in self._known.items() if now - v.last_seen <= self.settings.tracker.lost_after_s}
        full_every = self.camera.detect.full_frame_every_s
        # whole frame plus tiles at start and periodically; after a scene change the whole frame alone, since
        # motion is blind until the background settles
        full = self._last_full is None or (full_every > 0 and now - self._last_full >= self._full_wait)
        whole_only = not full and motion.recalibrated is not None
        fresh_motion = [b for b in (tuple(map(float, m)) for m in motion.boxes) if not self._quiet_place(b, now)]
        targets: list[tuple[float, float, float, float]] = list(fresh_motion)
        targets += self._unconfirmed  # new objects are looked at again until the tracker confirms them
        carried: list[_Known] = []
        for known in self._known.values():
            box = known.obj.box
            moving = any(_overlaps(box, m) for m in motion.boxes)
            if moving or now - known.last_checked >= self.camera.detect.stationary_recheck_s:
                targets.append(box)
            elif known.still and known.last_seen == self._previous_time:
                carried.append(known)  # seen, still and without motion: keep it without re-detecting
            else:
                targets.append(box)  # just lost, or moving out of a motion area: look again

        if full:
            regions = self.detector.full_frame_regions(frame.width, frame.height)
            self._full_wait = full_every if self._last_full is not None else self._full_wait
            self._last_full = now
        elif whole_only:
            regions = [(0, 0, frame.width, frame.height)]
        else:
            regions = regions_for(targets, frame.width, frame.height, self.detector.detector.input_size)

        dets = Detections.empty()
        if regions:
            self.stats.frames_detected += 1
            calls = self.detector.detector.calls
            start = clock.perf_counter()
            try:
                dets = self.detector.detect_full(frame) if full else self.detector.detect_regions(frame, regions)
            except DetectorFailure:  # AI blind: keep tracking what we had, say so, never stop the camera
                dets = Detections.empty()
                self.stats.blind_frames += 1
                if motion.boxes and self.camera.on_detector_failure == "fail_open":
                    self.bus.publish(MotionWhileBlind(self.name, now, tuple(motion.boxes)))
            active = self.detector.detector
            self.events.model_name, self.events.model_sha256 = active.name, active.sha256  # after a failover too
            self.stats.detector_seconds += clock.perf_counter() - start
            made = self.detector.detector.calls - calls
            self.stats.detector_calls += made
            if full:
                self.stats.full_pass_calls += made
            elif regions == [(0, 0, frame.width, frame.height)]:
                self.stats.whole_frame_calls += made
            dets = self._filter(dets, frame.width * frame.height)
            self._remember_quiet(fresh_motion, dets, now)
            for known in self._known.values():
                if any(_contains(r, known.obj.box) for r in regions):
                    known.last_checked = now
        primary = dets
        review = self._review(frame, motion.boxes, dets)
        if review is not None and len(review.secondary_only):
            dets = Detections.concat([dets, review.secondary_only])
        # Still objects outside every region keep their last box: they are not lost, just not re-checked.
        carry = [k for k in carried if not any(_contains(r, k.obj.box) for r in regions)]
        if carry:
            label_ids = np.array([COCO_LABELS.index(k.obj.label) for k in carry])
            dets = Detections.concat([dets, Detections(
                np.array([k.obj.box for k in carry], np.float32),
                np.array([k.obj.score for k in carry], np.float32), label_ids)])

        objects = self.tracker.update(dets, now)
        if self.second_opinion is not None:
            self._mark_sources(objects, primary, review)
        for obj in objects:
            previous = self._known.get(obj.track_id)
            still = previous is not None and float(iou_matrix(np.array([previous.obj.box]),
                                                              np.array([obj.box]))[0, 0]) >= 0.9
            self._known[obj.track_id] = _Known(obj, now, previous.last_checked if previous else now, still)
        self._previous_time = now
        self._unconfirmed = self._not_tracked(dets, objects)
        zones = {obj.track_id: rules.zones_of(obj) for obj in objects}
        hits = rules.update(objects, now)
        identities = self.faces.update(frame, objects) if self.faces is not None else None
        ended = self.events.update(frame, objects, zones, hits, now, identities)
        for track_id in ended:
            rules.forget(track_id)
        if self.faces is not None:
            self.faces.forget(ended)
        if self.second_opinion is not None:
            self._check_evasion(frame, objects)
        return FrameResult(objects, regions, motion.boxes)

    def _review(self, frame: Frame, motion_boxes: list[tuple[int, int, int, int]],
                primary: Detections) -> Review | None:
        """The second model's look at this frame (None when it is off or not due)."""
        opinion = self.second_opinion
        if opinion is None:
            return None
        watched = [k.obj.box for tid, k in self._known.items() if self._sources.get(tid) == "secondary"]
        calls, seconds, zone_checks = opinion.calls, opinion.seconds, opinion.zone_checks
        review = opinion.review(frame, motion_boxes, primary, watched,
                                lambda raw: self._filter(raw, frame.width * frame.height))
        self.stats.second_opinion_checks += review.ran
        self.stats.second_opinion_zone_checks += opinion.zone_checks - zone_checks
        self.stats.secondary_only_detections += len(review.secondary_only)
        self.stats.second_opinion_calls += opinion.calls - calls
        self.stats.second_opinion_seconds += opinion.seconds - seconds
        return review if review.ran else None

    def _mark_sources(self, objects: list[TrackedObject], primary: Detections, review: Review | None) -> None:
        """Say which model saw each tracked object this frame, by its best-overlapping detection; an object matched
        by neither (carried, predicted) keeps what it had."""
        self._sources = {tid: src for tid, src in self._sources.items() if tid in self._known}
        self._disagree = {tid: n for tid, n in self._disagree.items() if tid in self._known}
        secondary = review.secondary_only if review is not None else Detections.empty()
        for obj in objects:
            label = COCO_LABELS.index(obj.label)
            box = np.array([obj.box], np.float32)
            p = iou_matrix(box, primary.boxes)[0] * (primary.class_ids == label)
            s = iou_matrix(box, secondary.boxes)[0] * (secondary.class_ids == label)
            best_p, best_s = (float(p.max()) if len(p) else 0.0), (float(s.max()) if len(s) else 0.0)
            if max(best_p, best_s) <= 0.3:
                obj.seen_by = self._sources.get(obj.track_id, "primary")
                continue
            if best_p >= best_s:
                confirmed = review is not None and bool(review.confirmed[int(p.argmax())])
                obj.seen_by = "both" if confirmed else "primary"
                self._disagree.pop(obj.track_id, None)
            else:
                obj.seen_by = "secondary"
                self.stats.disagreements += self._sources.get(obj.track_id) != "secondary"
                self._disagree[obj.track_id] = self._disagree.get(obj.track_id, 0) + 1
            self._sources[obj.track_id] = obj.seen_by

    def _check_evasion(self, frame: Frame, objects: list[TrackedObject]) -> None:
        """Raise ``evasion_suspected`` once per track that only the second model has seen for
        ``disagreement_frames`` analysed frames in a row, with both models' scores for its region as evidence."""
        assert self.second_opinion is not None
        needed = self.opinion_config.disagreement_frames
        for obj in objects:
            if self._disagree.get(obj.track_id, 0) < needed or obj.track_id in self._evasion_alerted:
                continue
            self._evasion_alerted.add(obj.track_id)
            self.stats.evasion_alerts += 1
            primary = self.detector.detector
            primary_score = best_score_in(primary, frame, obj.box, COCO_LABELS.index(obj.label))
            secondary_name = self.second_opinion.detector.detector.name
            event = self.events.promote(obj.track_id, frame.time)  # the alert's object is an event, with evidence
            self.bus.publish(Alert(
                kind=EVASION_SUSPECTED, severity=Severity.high, camera=self.name, source_time=frame.time,
                message=f"camera {self.name}: {secondary_name} has seen a {obj.label} for {needed} analysed frames "
                f"that {primary.name} does not report (score {primary_score}): possible evasion attack on the "
                "primary model; look at the camera",
                data={"label": obj.label, "track_id": obj.track_id, "box": [round(v, 1) for v in obj.box],
                      "frame_time": frame.time, "event_id": event.id if event is not None else None,
                      "primary": {"model": primary.name, "score": primary_score},
                      "secondary": {"model": secondary_name, "score": round(obj.score, 4)}}))

    def close(self) -> None:
        """Finish every open event (end of file, or camera stopping)."""
        self.events.finish_all()

    def _quiet_place(self, box: tuple[float, float, float, float], now: float) -> bool:
        """True if ``box`` is motion where nothing was found moments ago and it has not grown since."""
        window = self.camera.detect.empty_motion_recheck_s
        self._quiet = [(q, t) for q, t in self._quiet if now - t < window]
        area = _area(box)
        return any(_intersection(box, q) >= 0.7 * area and area <= 2 * _area(q) for q, _ in self._quiet)

    def _remember_quiet(self, examined: list[tuple[float, float, float, float]], dets: Detections,
                        now: float) -> None:
        for box in examined:
            if not any(_overlaps(box, tuple(map(float, d))) for d in dets.boxes):
                self._quiet.append((box, now))

    @staticmethod
    def _not_tracked(dets: Detections, objects: list[TrackedObject]) -> list[tuple[float, float, float, float]]:
        if len(dets) == 0:
            return []
        if not objects:
            return [tuple(map(float, b)) for b in dets.boxes]
        overlap = iou_matrix(dets.boxes, np.array([o.box for o in objects], np.float32)).max(axis=1)
        return [tuple(map(float, b)) for b, o in zip(dets.boxes, overlap, strict=True) if o < 0.3]

    def _filter(self, dets: Detections, frame_area: int) -> Detections:
        return filter_detections(dets, self.camera.objects, self._object_mask, frame_area)


def filter_detections(dets: Detections, objects: ObjectsConfig, object_mask: np.ndarray | None, frame_area: int,
                      *, min_scores: bool = True) -> Detections:
    """Keep tracked labels within their size filters, outside the object mask and (``min_scores``) above
    their ``min_score``. ``trustcam assess`` keeps low scores to draw precision-recall curves."""
    if len(dets) == 0:
        return dets
    tracked = {COCO_LABELS.index(label) for label in objects.track}
    areas = (dets.boxes[:, 2] - dets.boxes[:, 0]) * (dets.boxes[:, 3] - dets.boxes[:, 1]) / frame_area
    keep = []
    for i, (class_id, score, area, box) in enumerate(zip(dets.class_ids, dets.scores, areas, dets.boxes, strict=True)):
        if int(class_id) not in tracked:
            continue
        rule = objects.filter_for(COCO_LABELS[int(class_id)])
        if (min_scores and score < rule.min_score) or not (rule.min_area <= area <= rule.max_area):
            continue
        if object_mask is not None:
            fx = int(min(max((box[0] + box[2]) / 2, 0), object_mask.shape[1] - 1))
            fy = int(min(max(box[3] - 1, 0), object_mask.shape[0] - 1))
            if object_mask[fy, fx] == 0:
                continue
        keep.append(i)
    return dets.select(keep)


def _phase(camera: str) -> float:
    """Share of ``full_frame_every_s`` between the first whole-frame pass and the second, 0.5-1 and fixed per camera
    name. A tiled pass is ~25 model calls at 1080p; cameras started together would otherwise make them all in the
    same second, every period, and the shared detector's backlog overflowed their 1-second frame queues (frames
    dropped with the CPU half idle). Staggered, they take turns; every camera still makes one per period."""
    return 0.5 + 0.5 * camera_phase(camera)


def _area(box: tuple[float, ...]) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def _intersection(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return max(min(a[2], b[2]) - max(a[0], b[0]), 0.0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)


def _contains(region: Box, box: tuple[float, float, float, float]) -> bool:
    return region[0] <= box[0] and region[1] <= box[1] and region[2] >= box[2] and region[3] >= box[3]

