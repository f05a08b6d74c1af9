"""Every bus message that means "a person should know" becomes one :class:`Alert`, so sinks handle one type.

Severity per kind (see docs/alerts.md): rule hits take their rule's threat level; AI blind and tamper that
destroys the picture are critical; a degraded detector, an offline or stalled camera and storage trouble are
high; drift and timestamp oddities are warnings; a condition that ends is an ``info`` alert with ``cleared``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from trustcam.alerts.model import Alert, Severity
from trustcam.bus import Bus
from trustcam.config.schema import ThreatLevel
from trustcam.events.model import CameraCoverage, MotionWhileBlind, RuleTriggered
from trustcam.monitor.drift import DriftAlert, DriftCleared
from trustcam.monitor.health import HealthAlert, HealthCleared
from trustcam.monitor.tamper import TamperAlert, TamperCleared

THREAT_SEVERITY = {ThreatLevel.none: Severity.info, ThreatLevel.low: Severity.info,
                   ThreatLevel.medium: Severity.warning, ThreatLevel.high: Severity.high,
                   ThreatLevel.critical: Severity.critical}
HEALTH_SEVERITY: dict[str, Severity] = {"offline": Severity.high, "stalled": Severity.high,
                                        "low_fps": Severity.warning, "reconnect_storm": Severity.warning,
                                        "time_jump": Severity.warning, "time_repeat": Severity.warning}
TAMPER_SEVERITY: dict[str, Severity] = {"covered": Severity.critical, "blinded": Severity.critical,
                                        "moved": Severity.critical, "looped": Severity.critical,
                                        "frozen": Severity.critical, "defocused": Severity.high}
COVERAGE_SEVERITY: dict[str, Severity] = {"degraded": Severity.high, "blind": Severity.critical,
                                          "restored": Severity.info}
MOTION_WHILE_BLIND_EVERY_S = 30.0  # motion while blind comes every frame; one alert per camera per this


def from_rule(m: RuleTriggered, identity: bool = False) -> Alert:
    """``identity``: the camera's ``faces.publish_identity``; otherwise no name, distance or margin leaves the
    machine in an alert (message included)."""
    e, hit = m.event, m.hit
    where = f" in zone {hit.zone}" if hit.zone else ""
    who = f" ({e.sub_label})" if identity and e.sub_label else ""
    data: dict[str, Any] = {"rule": hit.rule, "rule_type": hit.type, "threat": hit.threat.value, "zone": hit.zone,
                            "label": e.label, "event_id": e.id, "track_id": e.track_id,
                            "score": round(e.best_score, 4), "snapshot": e.snapshot}
    if identity:
        data.update(sub_label=e.sub_label, face_distance=e.face_distance, face_margin=e.face_margin)
    return Alert(kind="rule", severity=THREAT_SEVERITY[hit.threat], camera=e.camera, source_time=hit.time,
                 message=f"{e.label}{who} on camera {e.camera}{where}: rule {hit.rule} ({hit.type}, threat "
                 f"{hit.threat.value})", data=data)


def from_motion_while_blind(m: MotionWhileBlind) -> Alert:
    return Alert(kind="motion_while_blind", severity=Severity.critical, camera=m.camera, source_time=m.time,
                 message=f"camera {m.camera}: motion while no detector works (fail-open); look at the camera now",
                 data={"boxes": [list(b) for b in m.boxes]})


def from_coverage(m: CameraCoverage) -> Alert:
    c = m.change
    text = {"degraded": f"AI coverage degraded ({c.failed} failed: {c.reason}); now {c.active} (backup)",
            "blind": f"AI coverage blind: every detector failed ({c.reason}); now only motion alerts (fail-open) "
            "or none",
            "restored": f"AI coverage restored ({c.reason}); now {c.active}"}[c.state]
    return Alert(kind="coverage", severity=COVERAGE_SEVERITY[c.state], camera=m.camera, source_time=c.time,
                 message=f"camera {m.camera}: {text}", cleared=c.state == "restored",
                 data={"state": c.state, "active": c.active, "failed": c.failed, "reason": c.reason})


def from_health(m: HealthAlert) -> Alert:
    return Alert(kind="health", severity=HEALTH_SEVERITY.get(m.kind, Severity.warning), camera=m.camera,
                 message=f"camera health: {m.message}", source_time=m.time,
                 data={"problem": m.kind, **_plain(m.evidence)})


def from_health_cleared(m: HealthCleared) -> Alert:
    return Alert(kind="health", severity=Severity.info, camera=m.camera, source_time=m.time, cleared=True,
                 message=f"camera health: {m.camera}: {m.kind} cleared", data={"problem": m.kind})


def from_tamper(m: TamperAlert) -> Alert:
    return Alert(kind="tamper", severity=TAMPER_SEVERITY.get(m.kind, Severity.high), camera=m.camera,
                 message=f"camera {m.camera} tampered ({m.kind}): {m.message}", source_time=m.time,
                 data={"problem": m.kind, "started": m.started, **_plain(m.evidence)})


def from_tamper_cleared(m: TamperCleared) -> Alert:
    return Alert(kind="tamper", severity=Severity.info, camera=m.camera, source_time=m.time, cleared=True,
                 message=f"camera {m.camera}: tamper condition {m.kind} cleared", data={"problem": m.kind})


def from_drift(m: DriftAlert) -> Alert:
    return Alert(kind="drift", severity=Severity.warning, camera=m.camera, source_time=m.time,
                 message=f"camera {m.camera} drift: {m.message}",
                 data={"signal": m.signal, "statistic": m.statistic, "value": m.value, "p_value": m.p_value,
                       "baseline": _plain(m.baseline), "current": _plain(m.current)})


def from_drift_cleared(m: DriftCleared) -> Alert:
    return Alert(kind="drift", severity=Severity.info, camera=m.camera, source_time=m.time, cleared=True,
                 message=f"camera {m.camera}: drift of {m.signal} cleared (back within the baseline)",
                 data={"signal": m.signal})


def from_storage(m: Any) -> Alert:  # StorageAlert; typed loosely so this module does not import the vault
    return Alert(kind="storage", severity=Severity.high, camera=m.camera,
                 message=f"storage alert: {m.message}", source_time=m.time)


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Numbers as JSON-safe floats (numpy scalars are not JSON)."""
    return {k: (float(v) if hasattr(v, "__float__") and not isinstance(v, bool | int) else v)
            for k, v in values.items()}


class AlertConverter:
    """Subscribes to the source messages and republishes each as an :class:`Alert` on the same bus."""

    def __init__(self, bus: Bus, clock: Callable[[], float] = time.monotonic,
                 identity_cameras: frozenset[str] = frozenset()) -> None:
        self.bus = bus
        self.clock = clock
        self.identity_cameras = identity_cameras  # faces.enabled and faces.publish_identity: alerts carry names
        self._blind_last: dict[str, float] = {}

    def attach(self) -> None:
        from trustcam.storage.retention import StorageAlert

        pairs: list[tuple[type, Callable[[Any], Alert]]] = [
            (RuleTriggered, lambda m: from_rule(m, m.event.camera in self.identity_cameras)),
            (CameraCoverage, from_coverage), (HealthAlert, from_health),
            (HealthCleared, from_health_cleared), (TamperAlert, from_tamper), (TamperCleared, from_tamper_cleared),
            (DriftAlert, from_drift), (DriftCleared, from_drift_cleared), (StorageAlert, from_storage),
        ]
        for message_type, convert in pairs:
            self.bus.subscribe(message_type, lambda m, convert=convert: self.bus.publish(convert(m)))
        self.bus.subscribe(MotionWhileBlind, self._motion_while_blind)

    def _motion_while_blind(self, m: MotionWhileBlind) -> None:
        now = self.clock()
        last = self._blind_last.get(m.camera)
        if last is not None and now - last < MOTION_WHILE_BLIND_EVERY_S:
            return
        self._blind_last[m.camera] = now
        self.bus.publish(from_motion_while_blind(m))
