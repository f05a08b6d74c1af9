"""Turn tracked objects and rule hits into events with a start, an end, a best snapshot and provenance.

A track becomes an event only once its median score passes the label's ``threshold``: a one-frame
false positive never raises an alert. Rule hits before that are held and attached when it does.
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trustcam.bus import Bus
from trustcam.config.schema import ObjectsConfig
from trustcam.events.model import Event, EventEnded, EventStarted, FaceIdentity, RuleTriggered
from trustcam.events.snapshot import render_snapshot, write_snapshot
from trustcam.rules.engine import RuleHit
from trustcam.vision.tracker import TrackedObject


@dataclass
class _Candidate:
    label: str
    first_seen: float
    last_seen: float
    scores: list[float] = field(default_factory=list)
    best_score: float = -1.0
    best_box: tuple[float, float, float, float] = (0, 0, 0, 0)
    best_time: float = 0.0
    best_image: np.ndarray | None = None
    zones: list[str] = field(default_factory=list)
    hits: list[RuleHit] = field(default_factory=list)
    seen_by: set[str] = field(default_factory=set)
    identity: FaceIdentity | None = None  # the latest answer from the track's best face (faces.enabled only)
    event: Event | None = None


SnapshotStore = Callable[[str, str, bytes], str]
"""``store(camera, event_id, jpeg) -> reference``: the encrypted vault when recording, instead of a plain file."""


class EventBuilder:
    def __init__(self, camera: str, objects: ObjectsConfig, bus: Bus, *, model_name: str, model_sha256: str,
                 snapshot_dir: Path | None, lost_after_s: float, snapshot_store: SnapshotStore | None = None) -> None:
        self.camera = camera
        self.objects = objects
        self.bus = bus
        self.model_name = model_name
        self.model_sha256 = model_sha256
        self.snapshot_dir = snapshot_dir
        self.snapshot_store = snapshot_store
        self.lost_after_s = lost_after_s
        self._tracks: dict[int, _Candidate] = {}

    def promote(self, track_id: int, time: float) -> Event | None:
        """Make ``track_id`` an event now, whatever its median score: the second opinion found an object the primary
        keeps missing (suspected evasion). The thresholds are tuned on the primary's scores; the second model's
        scores for the same person are lower, and an attack on the primary must not also hide the event."""
        cand = self._tracks.get(track_id)
        if cand is not None and cand.event is None:
            self._start(cand, track_id, time)
        return cand.event if cand is not None else None

    def _start(self, cand: _Candidate, track_id: int, time: float) -> None:
        cand.event = Event(
            id=uuid.uuid4().hex, camera=self.camera, label=cand.label, track_id=track_id,
            start=cand.first_seen, end=time, best_score=cand.best_score, best_box=cand.best_box,
            best_time=cand.best_time, model_name=self.model_name, model_sha256=self.model_sha256,
        )
        self._sync(cand, time)
        self.bus.publish(EventStarted(cand.event))

    @property
    def open_events(self) -> list[Event]:
        return [c.event for c in self._tracks.values() if c.event is not None]

    def update(self, image_source: object, objects: list[TrackedObject], zones: dict[int, list[str]],
               hits: list[RuleHit], time: float, identities: Mapping[int, FaceIdentity] | None = None) -> list[int]:
        """Record this frame; returns track IDs whose events ended (their rule state can be dropped).

        ``image_source`` has a ``bgr`` attribute (a Frame), read only when a new best snapshot is taken.
        ``identities``: tracks whose face was (re)identified this frame; the newest answer replaces the old one
        (it comes from a better face).
        """
        for obj in objects:
            cand = self._tracks.get(obj.track_id)
            if cand is None:
                cand = self._tracks[obj.track_id] = _Candidate(obj.label, time, time)
            cand.last_seen = time
            cand.scores.append(obj.score)
            if obj.seen_by is not None:
                cand.seen_by.add(obj.seen_by)
            if identities and obj.track_id in identities:
                cand.identity = identities[obj.track_id]
            if obj.score > cand.best_score:
                cand.best_score, cand.best_box, cand.best_time = obj.score, obj.box, time
                cand.best_image = image_source.bgr  # type: ignore[attr-defined]
            for zone in zones.get(obj.track_id, []):
                if zone not in cand.zones:
                    cand.zones.append(zone)
            if cand.event is not None:
                self._sync(cand, time)
            elif statistics.median(cand.scores) >= self.objects.filter_for(obj.label).threshold:
                self._start(cand, obj.track_id, time)
        for hit in hits:
            cand = self._tracks.get(hit.track_id)
            if cand is not None:
                cand.hits.append(hit)
        for cand in self._tracks.values():
            if cand.event is not None and len(cand.event.rules) < len(cand.hits):
                for hit in cand.hits[len(cand.event.rules):]:
                    cand.event.rules.append(hit)
                    self.bus.publish(RuleTriggered(cand.event, hit))
        stale = [tid for tid, c in self._tracks.items() if time - c.last_seen > self.lost_after_s]
        for tid in stale:
            self._finish(tid)
        return stale

    def finish_all(self) -> None:
        for tid in list(self._tracks):
            self._finish(tid)

    def _sync(self, cand: _Candidate, time: float) -> None:
        event = cand.event
        assert event is not None
        event.end = cand.last_seen
        event.best_score, event.best_box, event.best_time = cand.best_score, cand.best_box, cand.best_time
        event.zones = list(cand.zones)
        event.seen_by = _seen_by(cand.seen_by)
        if cand.identity is not None:
            event.sub_label = cand.identity.sub_label
            event.face_distance, event.face_margin = cand.identity.distance, cand.identity.margin

    def _finish(self, track_id: int) -> None:
        cand = self._tracks.pop(track_id)
        event = cand.event
        if event is None:
            return
        self._sync(cand, cand.last_seen)
        for hit in cand.hits[len(event.rules):]:
            event.rules.append(hit)
            self.bus.publish(RuleTriggered(event, hit))
        caption = f"{event.label} {event.best_score:.2f}"
        if self.snapshot_store is not None and cand.best_image is not None:
            jpeg = render_snapshot(cand.best_image, event.best_box, caption)
            event.snapshot = self.snapshot_store(self.camera, event.id, jpeg)
        elif self.snapshot_dir is not None and cand.best_image is not None:
            path = self.snapshot_dir / self.camera / f"{event.id}.jpg"
            event.snapshot = str(write_snapshot(cand.best_image, event.best_box, caption, path))
        self.bus.publish(EventEnded(event))


def _seen_by(sources: set[str]) -> str | None:
    """One word for which models saw the object over its life: both once each model saw it at some point."""
    if not sources:
        return None
    if "both" in sources or sources >= {"primary", "secondary"}:
        return "both"
    return next(iter(sources))
