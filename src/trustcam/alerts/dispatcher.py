"""The one alert path: bus messages → :class:`Alert` → persisted outbox → one worker thread per sink.

Each sink drains its own rows, so a slow webhook never delays MQTT, and reports every outcome on the bus
(:class:`AlertDelivered`, :class:`AlertDeliveryFailed`) for the canary and the metrics. Heartbeats go out from
the same worker, between deliveries, every ``alerts.heartbeat_s``; they are not queued.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Engine

from trustcam.alerts.convert import AlertConverter
from trustcam.alerts.log_sink import LogSink
from trustcam.alerts.model import Alert, AlertDelivered, AlertDeliveryFailed, Severity
from trustcam.alerts.outbox import Delivery, Outbox
from trustcam.alerts.sink import DeliveryError, Sink
from trustcam.bus import Bus
from trustcam.config.schema import Settings
from trustcam.events.model import CameraCoverage
from trustcam.monitor.health import HealthAlert, HealthCleared
from trustcam.monitor.tamper import TamperAlert, TamperCleared
from trustcam.storage.write_buffer import WriteBuffer, lost_alert, transient

log = logging.getLogger(__name__)
Outcome = Literal["delivered", "retry", "dead", "unreachable"]


@dataclass(frozen=True)
class AttemptResult:
    delivery: Delivery
    outcome: Outcome
    error: str | None = None


def build_sinks(settings: Settings, bus: Bus | None = None) -> list[Sink]:
    """The log sink (always) plus MQTT and webhooks as configured; bad secrets raise ConfigError here. With
    ``bus``, the MQTT sink also publishes the checkpoint witness entries seen on it."""
    sinks: list[Sink] = [LogSink()]
    if settings.alerts.mqtt.enabled:
        from trustcam.alerts.mqtt import MqttSink

        cameras = {name: cam for name, cam in settings.cameras.items() if cam.enabled}
        sinks.append(MqttSink(settings.alerts.mqtt, cameras, bus))
    if settings.alerts.webhooks:
        from trustcam.alerts.webhook import WebhookSink

        sinks.extend(WebhookSink(config) for config in settings.alerts.webhooks)
    return sinks


def why_not_ready(sink: Sink) -> str:
    return f" ({sink.last_error})" if sink.last_error else ""


class CameraStates:
    """Active problems per camera (health, tamper, AI coverage), from the bus, for heartbeats."""

    def __init__(self, cameras: list[str], bus: Bus) -> None:
        self._problems: dict[str, set[str]] = {name: set() for name in cameras}
        self._lock = threading.Lock()
        bus.subscribe(HealthAlert, lambda m: self._set(m.camera, m.kind, True))
        bus.subscribe(HealthCleared, lambda m: self._set(m.camera, m.kind, False))
        bus.subscribe(TamperAlert, lambda m: self._set(m.camera, f"tamper:{m.kind}", True))
        bus.subscribe(TamperCleared, lambda m: self._set(m.camera, f"tamper:{m.kind}", False))
        bus.subscribe(CameraCoverage, self._coverage)

    def _coverage(self, m: CameraCoverage) -> None:
        for state in ("degraded", "blind"):
            self._set(m.camera, f"ai:{state}", m.change.state == state)

    def _set(self, camera: str, problem: str, active: bool) -> None:
        with self._lock:
            problems = self._problems.setdefault(camera, set())
            if active:
                problems.add(problem)
            else:
                problems.discard(problem)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {cam: {"state": "problem" if p else "ok", "problems": sorted(p)}
                    for cam, p in self._problems.items()}


class AlertDispatcher:
    """Owns the outbox, the sinks and their worker threads; queues every :class:`Alert` published on ``bus``."""

    def __init__(self, settings: Settings, engine: Engine, bus: Bus, sinks: list[Sink] | None = None) -> None:
        self.settings = settings
        self.bus = bus
        self.outbox = Outbox(engine)
        # alerts raised and outcomes settled while the database is unreachable wait here, in order, bounded
        self.writes = WriteBuffer("alert", settings.database_buffer, on_lost=lambda lost: bus.publish(
            lost_alert("alert", lost, settings.database_buffer)))
        self.sinks = sinks if sinks is not None else build_sinks(settings, bus)
        self.converter = AlertConverter(bus, identity_cameras=frozenset(
            name for name, cam in settings.cameras.items() if cam.faces.enabled and cam.faces.publish_identity))
        self.converter.attach()
        self.cameras = CameraStates([n for n, c in settings.cameras.items() if c.enabled], bus)
        self.heartbeat_s = settings.alerts.heartbeat_s
        self._stop = threading.Event()
        self._wake = {sink.name: threading.Event() for sink in self.sinks}
        self._threads: list[threading.Thread] = []
        bus.subscribe(Alert, self._on_alert)

    def _on_alert(self, alert: Alert) -> None:
        names = [sink.name for sink in self.sinks if sink.accepts(alert)]
        try:  # persisted before any attempt: a crash now loses nothing; a database outage queues it in memory
            self.writes.submit(lambda: self._queue(alert, names), f"alert {alert.id} ({alert.kind})")
        except Exception:  # the database refused it: the alert must at least reach the log
            log.exception("alert %s NOT QUEUED (database error), %s %s: %s", alert.id, alert.severity.value,
                          alert.kind, alert.message)

    def _queue(self, alert: Alert, names: list[str]) -> None:
        self.outbox.add(alert, names)  # idempotent: a retried add whose first commit landed queues nothing twice
        for name in names:
            self._wake[name].set()

    # --- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        for sink in self.sinks:
            sink.start()
            thread = threading.Thread(target=self._work, args=(sink,), name=f"alerts-{sink.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0, drain_s: float = 3.0) -> None:
        """Give reachable sinks up to ``drain_s`` to send what is due (the last alerts before a shutdown), then stop
        after the current attempt; what is left stays pending in the outbox for the next start. Alerts waiting for
        the database get the same ``drain_s`` to be queued first; those still waiting then are lost (logged)."""
        deadline = time.monotonic() + drain_s
        self.writes.flush(drain_s)
        for sink in self.sinks if self._threads else []:
            while sink.ready() and time.monotonic() < deadline and self._due_now(sink.name):
                self._wake[sink.name].set()
                time.sleep(0.02)
        self._stop.set()
        for event in self._wake.values():
            event.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        for sink in self.sinks:
            sink.stop()
        self.writes.close(timeout=max(0.0, deadline - time.monotonic()))

    def _due_now(self, sink: str) -> bool:
        try:
            return bool(self.outbox.due(sink, time.time(), limit=1))
        except Exception:  # the database is away: nothing to drain that we could mark delivered
            return False

    def wake(self, sinks: list[str] | None = None) -> None:
        """Look at the outbox now (e.g. after dead letters were replayed) instead of at the next poll."""
        for name, event in self._wake.items():
            if sinks is None or name in sinks:
                event.set()

    # --- the worker --------------------------------------------------------------------------------------
    def _work(self, sink: Sink) -> None:
        wake = self._wake[sink.name]
        next_heartbeat = time.time() + self.heartbeat_s
        while not self._stop.is_set():
            now = time.time()
            if now >= next_heartbeat:
                next_heartbeat = now + self.heartbeat_s
                try:
                    sink.heartbeat(self.heartbeat_payload())
                except Exception:
                    log.exception("%s: heartbeat failed", sink.name)
            rows: list[Delivery] = []
            next_due: float | None = None
            try:
                # claimed (leased) for this worker alone: dispatchers sharing a PostgreSQL database never send one
                # alert twice; rows not settled here (stop, sink unreachable, an error) are handed back at once.
                # While writes wait for the database (an outage) nothing is claimed: the buffered alerts and
                # outcomes go in first, and the worker does not hammer a server that is down
                waiting = self.writes.pending > 0
                rows = self.outbox.claim(sink.name, now) if sink.ready() and not waiting else []
                unsettled = list(rows)
                try:
                    for row in rows:
                        if self._stop.is_set() or self.attempt(sink, row).outcome == "unreachable":
                            break
                        unsettled.remove(row)
                finally:
                    self.outbox.release(unsettled)
                if not waiting:
                    next_due = self.outbox.next_due(sink.name) if not rows else time.time()
            except Exception as exc:  # the database is locked or gone: keep the worker alive, retry shortly
                if transient(exc):
                    log.warning("%s: alert worker cannot reach the database (%s); retrying", sink.name,
                                type(exc).__name__)
                else:
                    log.exception("%s: alert worker error", sink.name)
            if rows and sink.ready():
                continue
            wait = next_heartbeat - time.time()
            if next_due is not None:
                wait = min(wait, next_due - time.time())
            if not sink.ready():
                wait = min(wait, 0.2)
            wake.wait(max(0.01, min(wait, 1.0)))
            wake.clear()

    def attempt(self, sink: Sink, row: Delivery) -> AttemptResult:
        """One delivery attempt of ``row`` to ``sink``; updates the outbox and reports on the bus."""
        alert = row.alert
        try:
            sink.deliver(alert)
        except Exception as exc:
            counts = exc.counts if isinstance(exc, DeliveryError) else True
            error = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
            if not counts:
                return AttemptResult(row, "unreachable", error)
            attempts = row.attempts + 1
            dead = sink.max_attempts is not None and attempts >= sink.max_attempts
            if dead:
                self.writes.submit(lambda: self.outbox.dead(row.id, attempts, error), f"alert {alert.id} dead")
                log.error("alert %s (%s, %s) to %s given up after %d attempts, moved to the dead-letter queue "
                          "(`trustcam alerts dlq`, `trustcam alerts replay`): %s", alert.id, alert.kind,
                          alert.severity.value, sink.name, attempts, error)
            else:
                at = time.time() + sink.retry_delay(attempts)
                self.writes.submit(lambda: self.outbox.retry(row.id, attempts, error, at), f"alert {alert.id} retry")
                log.info("alert %s to %s: attempt %d failed (%s); retrying", alert.id, sink.name, attempts, error)
            self.bus.publish(AlertDeliveryFailed(alert.id, sink.name, error, attempts, dead))
            return AttemptResult(row, "dead" if dead else "retry", error)
        attempts = row.attempts + 1
        latency = time.time() - (alert.source_time if alert.source_time is not None else alert.time)
        # sent: the outcome must reach the database even if it just went away, or the row is sent again once the
        # claim's lease ends (buffered, it is stored before the worker claims anything again)
        self.writes.submit(lambda: self.outbox.delivered(row.id, attempts, latency),
                           f"alert {alert.id} delivered to {sink.name}")
        self.bus.publish(AlertDelivered(alert.id, sink.name, attempts, latency))
        return AttemptResult(row, "delivered")

    # --- heartbeats and one-off deliveries (CLI) ---------------------------------------------------------
    def heartbeat_payload(self) -> dict[str, Any]:
        counts = self.outbox.counts()
        per_sink: dict[str, dict[str, int]] = defaultdict(lambda: {"pending": 0, "dead": 0})
        for (sink, state), n in counts.items():
            if state in ("pending", "dead"):
                per_sink[sink][state] = n
        return {"time": time.time(), "cameras": self.cameras.snapshot(),
                "pending": sum(v["pending"] for v in per_sink.values()),
                "dead": sum(v["dead"] for v in per_sink.values()), "sinks": dict(per_sink)}

    def deliver_now(self, rows: list[Delivery], connect_timeout: float = 10.0) -> list[AttemptResult]:
        """Attempt each row once now with the configured sinks (for ``trustcam alerts replay``)."""
        by_name = {sink.name: sink for sink in self.sinks}
        results = []
        for sink in {by_name[r.sink] for r in rows if r.sink in by_name}:
            sink.start()
        try:
            for row in rows:
                sink = by_name.get(row.sink)
                if sink is None:
                    results.append(AttemptResult(row, "unreachable", f"sink {row.sink} is no longer configured; "
                                                 "it stays pending until it is configured again"))
                    continue
                if not sink.wait_ready(connect_timeout):
                    results.append(AttemptResult(row, "unreachable", f"{sink.name}: not connected within "
                                                 f"{connect_timeout:.0f}s{why_not_ready(sink)}; `trustcam run` "
                                                 "delivers it later"))
                    continue
                results.append(self.attempt(sink, row))
        finally:
            for sink in self.sinks:
                sink.stop()
        return results

    def send_test(self, connect_timeout: float = 10.0) -> dict[str, str | None]:
        """Send one test alert directly to every sink (not queued); returns sink -> error (None = delivered)."""
        alert = Alert(kind="test", severity=Severity.info, test=True,
                      message="trustcam test alert: if you read this, delivery to this sink works")
        results: dict[str, str | None] = {}
        for sink in self.sinks:
            sink.start()
        try:
            for sink in self.sinks:
                if not sink.wait_ready(connect_timeout):
                    results[sink.name] = f"not connected within {connect_timeout:.0f}s{why_not_ready(sink)}"
                    continue
                try:
                    sink.deliver(alert)
                    results[sink.name] = None
                except Exception as exc:
                    results[sink.name] = str(exc)
        finally:
            for sink in self.sinks:
                sink.stop()
        return results
