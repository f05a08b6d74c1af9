"""Camera health alerts driven by real StreamStats and injected wall-clock values."""

from __future__ import annotations

import time

from trustcam.ingest.stream import StreamStats
from trustcam.monitor.health import HealthAlert, HealthCleared, HealthMonitor


def kinds(events: list) -> list[tuple[str, str]]:
    return [("alert" if isinstance(e, HealthAlert) else "cleared", e.kind) for e in events]


def test_never_connected_then_connected_clears_offline() -> None:
    stats, mon, t0 = StreamStats(), HealthMonitor("door", 10), time.time()
    assert mon.check(stats, t0) == []
    assert mon.check(stats, t0 + 9) == []
    events = mon.check(stats, t0 + 10.5)
    assert kinds(events) == [("alert", "offline")] and events[0].evidence["never_connected"] is True
    assert mon.check(stats, t0 + 20) == []  # once until cleared
    stats.connected, stats.connects = True, 1
    stats.on_frame(t0 + 20.5)
    assert kinds(mon.check(stats, t0 + 21)) == [("cleared", "offline")]


def test_disconnect_longer_than_limit_is_offline() -> None:
    stats, mon, t0 = StreamStats(connected=True, connects=1), HealthMonitor("door", 10), time.time()
    stats.on_frame(t0)
    assert mon.check(stats, t0) == []
    stats.connected, stats.last_error = False, "connection refused"
    assert mon.check(stats, t0 + 1) == []
    events = mon.check(stats, t0 + 11.5)
    assert kinds(events) == [("alert", "offline")]
    assert events[0].evidence["last_error"] == "connection refused" and "offline for" in events[0].message


def test_stalled_when_connected_but_silent() -> None:
    stats, mon, t0 = StreamStats(connected=True, connects=1), HealthMonitor("yard", 10), time.time()
    for i in range(10):
        stats.on_frame(t0 + i * 0.1)
    assert mon.check(stats, t0 + 1) == []
    assert mon.check(stats, t0 + 5.5) == []
    events = mon.check(stats, t0 + 6)
    assert kinds(events) == [("alert", "stalled")] and events[0].evidence["silent_s"] > 5
    assert mon.check(stats, t0 + 7) == []
    stats.on_frame(t0 + 7.1)
    assert kinds(mon.check(stats, t0 + 7.2)) == [("cleared", "stalled")]


def test_low_fps_only_after_sustained_period() -> None:
    stats, mon, t0 = StreamStats(connected=True, connects=1), HealthMonitor("gate", 10), time.time()
    events: list = []
    t = t0
    for _ in range(30):  # 2 fps against 10 configured, for 15 s
        t += 0.5
        stats.on_frame(t)
        events += mon.check(stats, t)
    assert kinds(events) == [("alert", "low_fps")]
    alert = events[0]
    assert alert.time - t0 > 10 and alert.evidence["fps"] < 5 and alert.evidence["expected_fps"] == 10
    for _ in range(60):  # back to 10 fps
        t += 0.1
        stats.on_frame(t)
        events += mon.check(stats, t)
    assert kinds(events) == [("alert", "low_fps"), ("cleared", "low_fps")]


def test_reconnect_storm() -> None:
    stats, mon, t0 = StreamStats(connected=True, connects=1), HealthMonitor("lobby", 0.5), time.time()
    stats.on_frame(t0)
    events = mon.check(stats, t0)
    for i in range(6):  # 6 reconnects in 12 s, limit 5 per 60 s
        stats.reconnects += 1
        stats.connects += 1
        stats.on_frame(t0 + 2 * (i + 1))
        events += mon.check(stats, t0 + 2 * (i + 1))
    assert kinds(events) == [("alert", "reconnect_storm")] and events[0].evidence["reconnects"] == 6
    stats.on_frame(t0 + 40)
    assert mon.check(stats, t0 + 40) == []  # still within the window
    stats.on_frame(t0 + 73)
    assert kinds(mon.check(stats, t0 + 73)) == [("cleared", "reconnect_storm")]


def test_timestamps_that_repeat_or_jump() -> None:
    mon, w = HealthMonitor("dock", 10), time.monotonic()
    assert mon.on_frame(0.0, w) == [] and mon.on_frame(0.1, w + 0.1) == []
    events = mon.on_frame(0.1, w + 0.2)
    assert kinds(events) == [("alert", "time_repeat")]
    assert mon.on_frame(0.1, w + 0.3) == []  # once until cleared
    events = mon.on_frame(3.0, w + 0.4)  # > 5 frame intervals forward
    assert kinds(events) == [("alert", "time_jump")] and events[0].evidence["delta_s"] > 0.5
    t, wall, cleared = 3.0, w + 0.4, []
    for _ in range(60):
        t, wall = t + 0.1, wall + 0.1
        cleared += mon.on_frame(t, wall)
    assert kinds(cleared) == [("cleared", "time_repeat"), ("cleared", "time_jump")]
    events = mon.on_frame(t - 2.0, wall + 0.1)  # backwards
    assert kinds(events) == [("alert", "time_jump")] and "backwards" in events[0].message


def test_cleared_carries_camera_and_kind() -> None:
    stats, mon, t0 = StreamStats(), HealthMonitor("door", 10, offline_after_s=1), time.time()
    mon.check(stats, t0)
    mon.check(stats, t0 + 2)
    stats.connected = True
    stats.on_frame(t0 + 2.5)
    (cleared,) = mon.check(stats, t0 + 3)
    assert cleared == HealthCleared("door", "offline", t0 + 3)
