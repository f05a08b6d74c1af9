"""Messages the pipeline publishes on the bus: finished events and scene changes."""

from __future__ import annotations

from dataclasses import dataclass, field

from trustcam.config.schema import ThreatLevel
from trustcam.rules.engine import RuleHit
from trustcam.vision.detectors.failover import CoverageChange


@dataclass(frozen=True)
class FaceIdentity:
    """Face recognition's answer for a track, from its best face so far: an enrolled name or "unknown face" (then
    no distance or margin: a stranger is compared with nobody on record)."""

    sub_label: str
    distance: float | None  # to the matched identity's nearest template
    margin: float | None  # how much farther the next identity is (None: only one enrolled)
    quality: float  # of the face it came from (0..1)


@dataclass
class Event:
    """One tracked object's story on one camera: when, what, where, how sure, and which model saw it."""

    id: str
    camera: str
    label: str
    track_id: int
    start: float
    end: float
    best_score: float
    best_box: tuple[float, float, float, float]
    best_time: float
    zones: list[str] = field(default_factory=list)
    rules: list[RuleHit] = field(default_factory=list)
    snapshot: str | None = None
    model_name: str = ""
    model_sha256: str = ""
    seen_by: str | None = None  # with a second opinion: "primary", "secondary" or "both"; None = one model only
    sub_label: str | None = None  # with faces.enabled: the identity, or "unknown face"; None = no face seen/faces off
    face_distance: float | None = None
    face_margin: float | None = None

    @property
    def threat(self) -> ThreatLevel:
        levels = [hit.threat for hit in self.rules]
        return max(levels, key=lambda t: t.rank) if levels else ThreatLevel.none

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "camera": self.camera,
            "label": self.label,
            "track_id": self.track_id,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "best_score": round(self.best_score, 4),
            "box": [round(v, 1) for v in self.best_box],
            "zones": self.zones,
            "rules": [hit.to_json() for hit in self.rules],
            "threat": self.threat.value,
            "snapshot": self.snapshot,
            "model": {"name": self.model_name, "sha256": self.model_sha256},
            "seen_by": self.seen_by,
            "sub_label": self.sub_label,
            "face_distance": self.face_distance,
            "face_margin": self.face_margin,
        }


@dataclass(frozen=True)
class EventStarted:
    event: Event


@dataclass(frozen=True)
class EventEnded:
    event: Event


@dataclass(frozen=True)
class RuleTriggered:
    """An alert: a rule fired for an object (sinks such as MQTT and webhooks listen for this)."""

    event: Event
    hit: RuleHit


@dataclass(frozen=True)
class SceneChanged:
    """Most of the picture changed at once (relight, IR switch, covered or moved camera)."""

    camera: str
    time: float
    reason: str
    changed_fraction: float


@dataclass(frozen=True)
class MotionWhileBlind:
    """No detector is working and something moves: with ``on_detector_failure: fail_open`` this is an alert."""

    camera: str
    time: float
    boxes: tuple[tuple[int, int, int, int], ...]


@dataclass(frozen=True)
class CameraCoverage:
    """A camera's AI coverage changed: degraded (on a backup detector), blind (none left) or restored."""

    camera: str
    change: CoverageChange
