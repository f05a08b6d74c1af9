"""Zone entry, loitering and line crossing, evaluated per tracked object on its foot point.

Each rule fires at most once per object, so one person walking in raises one alert, not one per frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from trustcam.config.schema import CameraConfig, CrossLineRule, EnterZoneRule, LoiterRule, ThreatLevel
from trustcam.vision.tracker import TrackedObject


@dataclass(frozen=True)
class RuleHit:
    rule: str
    type: str
    threat: ThreatLevel
    track_id: int
    time: float
    zone: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"name": self.rule, "type": self.type, "threat": self.threat.value, "time": round(self.time, 3),
                "zone": self.zone}


@dataclass
class _TrackState:
    zones: dict[str, float] = field(default_factory=dict)  # zone -> time the object entered it
    last_foot: tuple[float, float] | None = None
    fired: set[str] = field(default_factory=set)


def _side(a: tuple[float, float], b: tuple[float, float], p: tuple[float, float]) -> float:
    """> 0 when p is on the right of a→b as seen on screen (image y points down), < 0 on its left."""
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def _segments_cross(p1: tuple[float, float], p2: tuple[float, float], a: tuple[float, float],
                    b: tuple[float, float]) -> bool:
    d1, d2 = _side(a, b, p1), _side(a, b, p2)
    d3, d4 = _side(p1, p2, a), _side(p1, p2, b)
    return d1 * d2 < 0 and d3 * d4 < 0


class RuleEngine:
    """Evaluates one camera's zones and rules on frames of a fixed analysis size."""

    def __init__(self, camera: CameraConfig, width: int, height: int) -> None:
        self.camera = camera
        self.width, self.height = width, height
        self._zones = {
            name: np.array([[x * width, y * height] for x, y in zone.coordinates], np.float32)
            for name, zone in camera.zones.items()
        }
        self._states: dict[int, _TrackState] = {}

    def zones_of(self, obj: TrackedObject) -> list[str]:
        foot = obj.foot
        inside = []
        for name, poly in self._zones.items():
            allowed = self.camera.zones[name].objects
            if allowed is not None and obj.label not in allowed:
                continue
            if cv2.pointPolygonTest(poly, foot, False) >= 0:
                inside.append(name)
        return inside

    def update(self, objects: list[TrackedObject], time: float) -> list[RuleHit]:
        hits: list[RuleHit] = []
        for obj in objects:
            state = self._states.setdefault(obj.track_id, _TrackState())
            current = set(self.zones_of(obj))
            for zone in list(state.zones):
                if zone not in current:
                    del state.zones[zone]
            for zone in current:
                state.zones.setdefault(zone, time)
            for rule in self.camera.rules:
                if rule.name in state.fired or (rule.objects is not None and obj.label not in rule.objects):
                    continue
                if self._fires(rule, obj, state, time):
                    state.fired.add(rule.name)
                    hits.append(RuleHit(rule.name, rule.type, rule.threat, obj.track_id, time,
                                        getattr(rule, "zone", None)))
            state.last_foot = obj.foot
        return hits

    def forget(self, track_id: int) -> None:
        self._states.pop(track_id, None)

    def _fires(self, rule: EnterZoneRule | LoiterRule | CrossLineRule, obj: TrackedObject, state: _TrackState,
               time: float) -> bool:
        if isinstance(rule, EnterZoneRule):
            return rule.zone in state.zones
        if isinstance(rule, LoiterRule):
            entered = state.zones.get(rule.zone)
            return entered is not None and time - entered >= rule.seconds
        if state.last_foot is None:
            return False
        (ax, ay), (bx, by) = rule.line
        a, b = (ax * self.width, ay * self.height), (bx * self.width, by * self.height)
        if not _segments_cross(state.last_foot, obj.foot, a, b):
            return False
        if rule.direction == "any":
            return True
        now_right = _side(a, b, obj.foot) > 0
        return rule.direction == ("left_to_right" if now_right else "right_to_left")
