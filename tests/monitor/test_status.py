"""The status board behind /api/cameras: a condition lasts from its alert to its clear."""

from __future__ import annotations

import time

from trustcam.bus import Bus
from trustcam.monitor.drift import DriftAlert, DriftCleared
from trustcam.monitor.status import StatusBoard


def _drift(camera: str) -> DriftAlert:
    return DriftAlert(camera, "brightness", time.time(), "ks", 0.9, 0.001, {"mean": 100.0}, {"mean": 20.0},
                      f"camera {camera}: brightness drifted")


def test_drift_condition_lasts_until_the_monitor_clears_it() -> None:
    bus = Bus()
    board = StatusBoard(bus, ["cam", "other"])
    bus.publish(_drift("cam"))
    assert [(c.kind, c.detail) for c in board.conditions("cam")] == [("drift", "brightness")]
    assert board.conditions("other") == []
    bus.publish(DriftCleared("cam", "sharpness", time.time()))  # another signal: this one stays
    assert len(board.camera("cam")["alerts"]) == 1
    bus.publish(DriftCleared("cam", "brightness", time.time()))
    assert board.conditions("cam") == [] and board.camera("cam")["alerts"] == []
