"""Camera status board: what each camera is doing right now, for the web UI and the API.

It listens to the bus (health, tamper, drift, AI coverage, canary results) and keeps the conditions that are
active, so an operator sees at a glance which camera cannot be trusted at the moment and why, without
reading logs. Stream state and fps come from the stream's own counters.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from trustcam.alerts.model import Alert
from trustcam.bus import Bus
from trustcam.events.model import CameraCoverage
from trustcam.ingest.stream import StreamStats
from trustcam.monitor.canary import CanaryResult
from trustcam.monitor.drift import DriftAlert, DriftCleared
from trustcam.monitor.health import HealthAlert, HealthCleared
from trustcam.monitor.tamper import TamperAlert, TamperCleared


@dataclass(frozen=True)
class Condition:
    kind: str  # "health", "tamper", "drift", "coverage", "canary"
    detail: str  # e.g. "offline", "covered", "brightness", "blind"
    message: str
    since: float

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "detail": self.detail, "message": self.message, "since": self.since}


class StatusBoard:
    def __init__(self, bus: Bus, cameras: list[str], streams: dict[str, StreamStats] | None = None) -> None:
        self.cameras = list(cameras)
        self.streams = streams or {}
        self._active: dict[str, dict[tuple[str, str], Condition]] = {name: {} for name in cameras}
        self._coverage: dict[str, str] = {name: "full" for name in cameras}
        self._canary: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        bus.subscribe(HealthAlert, lambda m: self._raise(m.camera, "health", m.kind, m.message))
        bus.subscribe(HealthCleared, lambda m: self._clear(m.camera, "health", m.kind))
        bus.subscribe(TamperAlert, lambda m: self._raise(m.camera, "tamper", m.kind, m.message))
        bus.subscribe(TamperCleared, lambda m: self._clear(m.camera, "tamper", m.kind))
        bus.subscribe(DriftAlert, lambda m: self._raise(m.camera, "drift", m.signal, m.message))
        bus.subscribe(DriftCleared, lambda m: self._clear(m.camera, "drift", m.signal))
        bus.subscribe(CameraCoverage, self._on_coverage)
        bus.subscribe(CanaryResult, self._on_canary)

    def _raise(self, camera: str, kind: str, detail: str, message: str) -> None:
        with self._lock:
            conditions = self._active.setdefault(camera, {})
            previous = conditions.get((kind, detail))
            since = previous.since if previous else time.time()
            conditions[(kind, detail)] = Condition(kind, detail, message, since)

    def _clear(self, camera: str, kind: str, detail: str) -> None:
        with self._lock:
            self._active.setdefault(camera, {}).pop((kind, detail), None)

    def _on_coverage(self, message: CameraCoverage) -> None:
        change = message.change
        with self._lock:
            self._coverage[message.camera] = "full" if change.state == "restored" else change.state
        self._clear(message.camera, "coverage", "degraded")
        self._clear(message.camera, "coverage", "blind")
        if change.state != "restored":
            self._raise(message.camera, "coverage", change.state,
                        f"camera {message.camera}: AI coverage {change.state} ({change.reason}; now "
                        f"{change.active or 'no detector'})")

    def _on_canary(self, result: CanaryResult) -> None:
        """The last probe's result; a failed probe is an active condition until a probe passes."""
        with self._lock:
            self._canary[result.camera] = {
                "outcome": result.outcome, "passed": result.outcome == "passed", "time": result.time,
                "probe": result.probe, "message": result.message, "score": result.score,
                "detection_latency_s": result.detection_latency_s, "delivery_latency_s": result.delivery_latency_s}
            failed = [key for key in self._active.setdefault(result.camera, {}) if key[0] == "canary"]
            for key in failed:
                self._active[result.camera].pop(key)
        if result.outcome != "passed":
            self._raise(result.camera, "canary", result.outcome,
                        f"canary self-test of camera {result.camera} failed ({result.outcome}): {result.message}")

    def conditions(self, camera: str) -> list[Condition]:
        with self._lock:
            return list(self._active.get(camera, {}).values())

    def camera(self, name: str) -> dict[str, Any]:
        stats = self.streams.get(name)
        if stats is None:
            state, fps, frames = "not running", 0.0, 0
        else:
            fps, frames = round(stats.fps, 2), stats.frames
            if stats.connected:
                state = "connected"
            elif stats.last_error is None:
                state = "stopped" if stats.connects else "connecting"
            else:
                state = "disconnected"
        with self._lock:
            coverage = self._coverage.get(name, "full")
            canary = self._canary.get(name)
        return {"name": name, "state": state, "fps": fps, "frames": frames, "coverage": coverage,
                "canary": canary, "alerts": [c.to_json() for c in self.conditions(name)]}

    def all_conditions(self) -> list[dict[str, Any]]:
        return [dict(c.to_json(), camera=name) for name in self.cameras for c in self.conditions(name)]


class RecentAlerts:
    """The last ``size`` alerts published on the bus (newest first on read), for the alerts page."""

    def __init__(self, bus: Bus, size: int = 500) -> None:
        from collections import deque

        self._ring: deque[Alert] = deque(maxlen=size)
        self._lock = threading.Lock()
        bus.subscribe(Alert, self._add)

    def _add(self, alert: Alert) -> None:
        with self._lock:
            self._ring.append(alert)

    def recent(self, limit: int = 100) -> list[Alert]:
        with self._lock:
            return list(reversed(self._ring))[:limit]
