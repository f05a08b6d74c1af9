"""The alert every sink receives, whatever raised it (a rule, tamper, health, drift, the canary, storage).

Published on the bus as :class:`Alert`; sinks report back :class:`AlertDelivered` / :class:`AlertDeliveryFailed`
so the canary and the metrics can tell that an alert really left the building.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    info = "info"
    warning = "warning"
    high = "high"
    critical = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


@dataclass(frozen=True)
class Alert:
    kind: str  # e.g. "rule", "tamper", "health", "drift", "coverage", "motion_while_blind", "storage", "canary",
    # "evasion_suspected" (trustcam.pipeline: only the second-opinion model sees an object)
    severity: Severity
    message: str
    camera: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)  # when the alert was raised (epoch seconds)
    source_time: float | None = None  # when the frame that caused it was captured (for frame→delivery latency)
    test: bool = False  # canary alerts: delivered like the others, flagged so receivers can tell them apart
    cleared: bool = False  # the condition ended (tamper cleared, camera back online)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "severity": self.severity.value, "message": self.message,
            "camera": self.camera, "data": self.data, "time": self.time, "source_time": self.source_time,
            "test": self.test, "cleared": self.cleared,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Alert:
        return cls(kind=data["kind"], severity=Severity(data["severity"]), message=data["message"],
                   camera=data.get("camera"), data=dict(data.get("data") or {}), time=float(data["time"]),
                   source_time=data.get("source_time"), test=bool(data.get("test")),
                   cleared=bool(data.get("cleared")), id=data["id"])


@dataclass(frozen=True)
class AlertDelivered:
    alert_id: str
    sink: str  # "mqtt", "webhook:<name>", "log"
    attempts: int
    latency_s: float  # from alert.time (or source_time when known) to confirmed delivery


@dataclass(frozen=True)
class AlertDeliveryFailed:
    alert_id: str
    sink: str
    error: str
    attempts: int
    dead: bool  # True: given up, moved to the dead-letter queue (replay with `trustcam alerts replay`)
