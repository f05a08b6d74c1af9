"""Bus messages become the right alerts, and the metrics count what really happened in a running service."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

from alerts_infra import wait_until

from trustcam.alerts.convert import MOTION_WHILE_BLIND_EVERY_S, AlertConverter
from trustcam.alerts.model import Alert, AlertDelivered, Severity
from trustcam.bus import Bus
from trustcam.config.schema import Settings, ThreatLevel
from trustcam.events.model import CameraCoverage, Event, MotionWhileBlind, RuleTriggered
from trustcam.monitor import metrics
from trustcam.monitor.drift import DriftAlert
from trustcam.monitor.health import HealthAlert, HealthCleared
from trustcam.monitor.tamper import TamperAlert, TamperCleared
from trustcam.rules.engine import RuleHit
from trustcam.service import Service
from trustcam.storage.retention import StorageAlert
from trustcam.vision.detectors.failover import CoverageChange


def converted(*messages: object, clock: list[float] | None = None) -> list[Alert]:
    bus = Bus()
    out: list[Alert] = []
    bus.subscribe(Alert, out.append)
    AlertConverter(bus, clock=(lambda: clock[0]) if clock else time.monotonic).attach()
    for message in messages:
        bus.publish(message)
    return out


def test_every_source_message_becomes_an_alert_with_its_severity() -> None:
    event = Event("e1", "office", "person", 3, 10.0, 12.0, 0.91, (1, 2, 3, 4), 11.0)
    hit = RuleHit("at-table", "enter_zone", ThreatLevel.high, 3, 11.5, zone="table")
    alerts = converted(
        RuleTriggered(event, hit),
        CameraCoverage("office", CoverageChange(20.0, "degraded", "nanodet-m-320", "yolox-nano", "hung")),
        CameraCoverage("office", CoverageChange(21.0, "blind", None, "nanodet-m-320", "crashed")),
        CameraCoverage("office", CoverageChange(22.0, "restored", "yolox-nano", "", "restarted")),
        HealthAlert("office", "offline", 30.0, "office: no picture for 20 s"), HealthCleared("office", "offline", 31.0),
        TamperAlert("office", "covered", 40.0, 37.0, {"contrast": 0.01}, "lens covered"),
        TamperCleared("office", "covered", 41.0),
        DriftAlert("office", "brightness", 50.0, "ks", 0.4, 0.001, {"mean": 1.0}, {"mean": 2.0}, "darker"),
        StorageAlert(None, "disk full of held evidence", 60.0),
    )
    got = [(a.kind, a.severity, a.cleared, a.source_time) for a in alerts]
    assert got == [
        ("rule", Severity.high, False, 11.5),
        ("coverage", Severity.high, False, 20.0), ("coverage", Severity.critical, False, 21.0),
        ("coverage", Severity.info, True, 22.0),
        ("health", Severity.high, False, 30.0), ("health", Severity.info, True, 31.0),
        ("tamper", Severity.critical, False, 40.0), ("tamper", Severity.info, True, 41.0),
        ("drift", Severity.warning, False, 50.0), ("storage", Severity.high, False, 60.0),
    ]
    rule = alerts[0]
    assert rule.camera == "office" and rule.data["rule"] == "at-table" and rule.data["event_id"] == "e1"
    assert "camera health: office: no picture" in alerts[4].message
    assert "camera office tampered (covered)" in alerts[6].message
    assert "AI coverage degraded" in alerts[1].message and "now nanodet-m-320" in alerts[1].message
    assert all(Alert.from_json(a.to_json()) == a for a in alerts)  # what the outbox stores comes back intact


def test_motion_while_blind_alerts_once_per_interval() -> None:
    clock = [0.0]
    bus_messages = [MotionWhileBlind("office", float(t), ((1, 2, 3, 4),)) for t in range(5)]
    assert len(converted(*bus_messages, clock=clock)) == 1  # one alert, not one per frame
    bus = Bus()
    out: list[Alert] = []
    bus.subscribe(Alert, out.append)
    AlertConverter(bus, clock=lambda: clock[0]).attach()
    bus.publish(bus_messages[0])
    clock[0] += MOTION_WHILE_BLIND_EVERY_S + 1
    bus.publish(bus_messages[1])
    assert [a.severity for a in out] == [Severity.critical, Severity.critical]


def test_metrics_of_a_running_service(person_video: Path, installed_models: None, tmp_path: Path) -> None:
    settings = Settings.model_validate({
        "data_dir": str(tmp_path / "data"), "detector": {"failover": []},
        "cameras": {"office": {"source": str(person_video), "tamper": {"enabled": False},
                               "drift": {"enabled": False}, "canary": {"enabled": False}}},
    })
    service = Service(settings)
    delivered: list[AlertDelivered] = []
    service.bus.subscribe(AlertDelivered, delivered.append)
    service.start()
    try:
        wait_until(lambda: service.workers[0].stream.stats.frames > 5, 30, "frames")
        service.bus.publish(HealthAlert("office", "low_fps", time.time(), "office: 1.0 fps, expected 5"))
        wait_until(lambda: any(d.sink == "log" for d in delivered), 5, "the log sink")
        text = service.metrics.render().decode()
    finally:
        service.stop()
    assert 'trustcam_frames_total{camera="office"}' in text
    frames = next(line for line in text.splitlines() if line.startswith('trustcam_frames_total{camera="office"}'))
    assert float(frames.split()[-1]) > 5
    assert 'trustcam_alerts_total{kind="health",severity="warning"} 1.0' in text
    assert 'trustcam_alert_deliveries_total{outcome="delivered",sink="log"} 1.0' in text
    assert 'trustcam_alert_delivery_latency_seconds_count{sink="log"} 1.0' in text
    assert 'trustcam_alert_outbox_pending{sink="log"} 0.0' in text
    assert 'trustcam_alert_outbox_dead{sink="log"} 0.0' in text
    assert 'trustcam_ai_coverage{camera="office",state="ok"} 1.0' in text
    assert 'trustcam_camera_problem{camera="office",problem="low_fps"} 1.0' in text
    assert 'trustcam_camera_connected{camera="office"} 1.0' in text


def test_metrics_do_not_import_the_service() -> None:
    """metrics <-> service was an import cycle (metrics named Service for its type hints): metrics now describe what
    they read with a Protocol. Neither at run time nor for type checkers does metrics import the service."""
    tree = ast.parse(Path(metrics.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "trustcam.service" not in imported, sorted(imported)
    check = subprocess.run([sys.executable, "-c", "import sys, trustcam.monitor.metrics; "
                            "print('trustcam.service' in sys.modules)"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and check.stdout.strip() == "False", check.stdout + check.stderr
