"""Prometheus metrics: what the cameras, the AI and the alert path are doing, scraped at ``/metrics``.

Counters that happen on the bus (events, alerts, deliveries) are counted as they happen; figures the
service already keeps (frames, fps, connection, outbox backlog) are read at scrape time, so they can never
drift from the truth. A private :class:`CollectorRegistry` keeps two services in one process apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trustcam.alerts.model import Alert, AlertDelivered, AlertDeliveryFailed
from trustcam.bus import Bus
from trustcam.config.schema import Settings
from trustcam.events.model import CameraCoverage, EventEnded
from trustcam.monitor.canary import CanaryResult
from trustcam.monitor.health import HealthAlert, HealthCleared
from trustcam.monitor.tamper import TamperAlert, TamperCleared

COVERAGE_STATES = ("ok", "degraded", "blind")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class MeasuredService(Protocol):
    """What metrics read of the running service (``trustcam.service.Service`` has it). A protocol, not an import:
    the service imports this module, so importing the service here would make a cycle. ``workers`` (each with
    ``camera_name`` and ``stream.stats``) and ``alerts`` (the dispatcher) are read when present."""

    settings: Settings


class _ServiceCollector(Collector):
    """Reads stream stats and the outbox at scrape time."""

    def __init__(self, service: MeasuredService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        frames = CounterMetricFamily("trustcam_frames", "Frames decoded per camera.", labels=["camera"])
        fps = GaugeMetricFamily("trustcam_fps", "Current decoded frames per second per camera.", labels=["camera"])
        up = GaugeMetricFamily("trustcam_camera_connected", "1 while the camera's stream is connected.",
                               labels=["camera"])
        reconnects = CounterMetricFamily("trustcam_camera_reconnects", "Stream reconnections per camera.",
                                         labels=["camera"])
        for worker in getattr(self.service, "workers", []):
            s = worker.stream.stats
            frames.add_metric([worker.camera_name], s.frames)
            fps.add_metric([worker.camera_name], s.fps)
            up.add_metric([worker.camera_name], 1.0 if s.connected else 0.0)
            reconnects.add_metric([worker.camera_name], s.reconnects)
        yield from (frames, fps, up, reconnects)
        dispatcher = getattr(self.service, "alerts", None)
        if dispatcher is None:
            return
        pending = GaugeMetricFamily("trustcam_alert_outbox_pending", "Alerts waiting for delivery per sink.",
                                    labels=["sink"])
        dead = GaugeMetricFamily("trustcam_alert_outbox_dead", "Alerts in the dead-letter queue per sink.",
                                 labels=["sink"])
        counts = dispatcher.outbox.counts()
        for sink in dispatcher.sinks:
            pending.add_metric([sink.name], counts.get((sink.name, "pending"), 0))
            dead.add_metric([sink.name], counts.get((sink.name, "dead"), 0))
        yield from (pending, dead)


class Metrics:
    """All trustcam metrics; ``render()`` is the Prometheus text exposition format."""

    def __init__(self, service: MeasuredService | None, bus: Bus) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("trustcam_events", "Finished events per camera and label.", ["camera", "label"],
                              registry=r)
        self.alerts = Counter("trustcam_alerts", "Alerts raised per kind and severity.", ["kind", "severity"],
                              registry=r)
        self.deliveries = Counter("trustcam_alert_deliveries", "Delivery attempts per sink and outcome "
                                  "(delivered, failed = will retry, dead = dead-letter queue).", ["sink", "outcome"],
                                  registry=r)
        self.latency = Histogram("trustcam_alert_delivery_latency_seconds", "From the frame (or the alert) to "
                                 "confirmed delivery, per sink.", ["sink"], buckets=LATENCY_BUCKETS, registry=r)
        self.coverage = Gauge("trustcam_ai_coverage", "1 for the camera's current AI coverage state "
                              "(ok, degraded = on a backup detector, blind = none works).", ["camera", "state"],
                              registry=r)
        self.problems = Gauge("trustcam_camera_problem", "1 while a health or tamper problem is active.",
                              ["camera", "problem"], registry=r)
        self.canary_result = Gauge("trustcam_canary_last_result", "1 when the camera's last canary self-test passed "
                                   "(test person detected and delivered in time), 0 when it failed.", ["camera"],
                                   registry=r)
        self.canary_time = Gauge("trustcam_canary_last_probe_timestamp_seconds", "When the camera's last canary "
                                 "probe started (epoch s): alert if it is older than a few canary.every_s.",
                                 ["camera"], registry=r)
        if service is not None:
            r.register(_ServiceCollector(service))
            for name, cam in service.settings.cameras.items():
                if cam.enabled:
                    self._set_coverage(name, "ok")
        bus.subscribe(EventEnded, lambda m: self.events.labels(m.event.camera, m.event.label).inc())
        bus.subscribe(Alert, lambda m: self.alerts.labels(m.kind, m.severity.value).inc())
        bus.subscribe(AlertDelivered, self._delivered)
        bus.subscribe(CanaryResult, self._canary)
        bus.subscribe(AlertDeliveryFailed,
                      lambda m: self.deliveries.labels(m.sink, "dead" if m.dead else "failed").inc())
        bus.subscribe(CameraCoverage, lambda m: self._set_coverage(
            m.camera, "ok" if m.change.state == "restored" else m.change.state))
        bus.subscribe(HealthAlert, lambda m: self.problems.labels(m.camera, m.kind).set(1))
        bus.subscribe(HealthCleared, lambda m: self.problems.labels(m.camera, m.kind).set(0))
        bus.subscribe(TamperAlert, lambda m: self.problems.labels(m.camera, f"tamper_{m.kind}").set(1))
        bus.subscribe(TamperCleared, lambda m: self.problems.labels(m.camera, f"tamper_{m.kind}").set(0))

    def _delivered(self, m: AlertDelivered) -> None:
        self.deliveries.labels(m.sink, "delivered").inc()
        self.latency.labels(m.sink).observe(max(0.0, m.latency_s))

    def _canary(self, m: CanaryResult) -> None:
        self.canary_result.labels(m.camera).set(1.0 if m.outcome == "passed" else 0.0)
        self.canary_time.labels(m.camera).set(m.time)

    def _set_coverage(self, camera: str, state: str) -> None:
        for s in COVERAGE_STATES:
            self.coverage.labels(camera, s).set(1.0 if s == state else 0.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
