"""Prometheus metrics: what the cameras, the AI and the alert path are doing, scraped at ``/metrics``.

Counters that happen on the bus (events, alerts, deliveries) are counted as they happen; figures the
service already keeps (frames, fps, connection, outbox backlog) are read at scrape time, so they can never
drift from the truth. A private :class:`CollectorRegistry` keeps two services in one process apart.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Protocol

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


class IngestWatch:
    """A packet tap on one camera: frames received, and how far the newest is behind the live edge.

    The lag is the growth of (wall clock - stream timestamp) over its smallest value on this connection: 0 while the
    reader keeps up with the camera, rising by a second per second of video it falls behind (the CPU cannot decode
    all cameras). Frames a camera did not send are not counted as lag. The reader decodes each packet right after
    demuxing it, so packets stand for decoded frames; one Python call per packet."""

    JUMP_S = 30.0  # a timestamp step this large (camera clock reset, stream restart) starts a new baseline

    def __init__(self) -> None:
        self.packets = 0
        self.lag_s = 0.0
        self._best: float | None = None
        self._last_gap: float | None = None

    def on_packet(self, packet: Any, _stream: object) -> None:
        self.packets += 1
        stamp = packet.dts if packet.dts is not None else packet.pts  # dts: arrival order (B-frames reorder pts)
        if stamp is None or packet.time_base is None:
            return
        gap = time.time() - float(stamp * packet.time_base)
        if self._best is None or (self._last_gap is not None and abs(gap - self._last_gap) > self.JUMP_S):
            self._best = gap
        self._best = min(self._best, gap)
        self._last_gap = gap
        self.lag_s = gap - self._best

    def on_connection(self, _stream: object) -> None:
        self._best = self._last_gap = None
        self.lag_s = 0.0


class _ServiceCollector(Collector):
    """Reads stream stats and the outbox at scrape time."""

    def __init__(self, service: MeasuredService) -> None:
        self.service = service
        self.ingest: dict[str, IngestWatch] = {}  # per camera, tapped at the first scrape (workers come later)

    def _watch(self, worker: Any) -> IngestWatch | None:
        watch = self.ingest.get(worker.camera_name)
        taps = getattr(worker, "taps", None)
        if watch is None and taps is not None:
            watch = self.ingest[worker.camera_name] = IngestWatch()
            taps.add(watch.on_packet, watch.on_connection)
        return watch

    def collect(self) -> Iterator[Metric]:
        frames = CounterMetricFamily("trustcam_frames", "Frames handed to analysis per camera (at detect.fps).",
                                     labels=["camera"])
        analysed = CounterMetricFamily("trustcam_frames_analysed", "Frames analysed per camera (trustcam_frames minus "
                                       "this is in flight or dropped: see trustcam_frames_dropped). Restarts at 0 "
                                       "when a failed pipeline is replaced.", labels=["camera"])
        dropped = CounterMetricFamily("trustcam_frames_dropped", "Frames a live camera dropped (oldest first) "
                                      "because analysis fell behind: the real-time loss.", labels=["camera"])
        received = CounterMetricFamily("trustcam_frames_received", "Video frames received and decoded per camera "
                                       "(all of them, not only those analysed), counted from the first scrape.",
                                       labels=["camera"])
        lag = GaugeMetricFamily("trustcam_ingest_lag_seconds", "How far the newest received frame is behind the "
                                "camera's live edge (0 while decoding keeps up; grows when the CPU cannot keep up).",
                                labels=["camera"])
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
            dropped.add_metric([worker.camera_name], getattr(worker, "frames_dropped", 0))
            pipeline = getattr(worker, "pipeline", None)
            if pipeline is not None:
                analysed.add_metric([worker.camera_name], pipeline.stats.frames)
            watch = self._watch(worker)
            if watch is not None:
                received.add_metric([worker.camera_name], watch.packets)
                lag.add_metric([worker.camera_name], watch.lag_s)
        yield from (frames, fps, up, reconnects, analysed, dropped, received, lag)
        yield from self._second_opinion()
        yield from self._detector_service()
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

    def _detector_service(self) -> Iterator[Metric]:
        """The node's shared detector (``trustcam run``): a rising ``late`` count is the sign of an overloaded node
        (calls queued past their deadline while the model kept answering), which is not a failover."""
        detectors = getattr(self.service, "detectors", None)
        service = getattr(detectors, "service", None)
        if service is None:
            return
        model, s = [service.name], service.stats
        families = [
            ("trustcam_detector_service_requests", "Detections the node's shared detector answered or failed.",
             s.requests),
            ("trustcam_detector_service_batches", "Batches sent to the model process (requests / batches is the "
             "mean batch).", s.batches),
            ("trustcam_detector_service_late", "Requests answered after their camera's call deadline because they "
             "waited in the queue behind other cameras' while the model kept answering: the node is overloaded.",
             s.late),
            ("trustcam_detector_service_overloaded", "Requests that failed over after waiting in the queue for 10x the "
             "call deadline.", s.overloaded),
            ("trustcam_detector_service_restarts", "Times the model process was restarted after a crash or a hang.",
             s.restarts),
        ]
        for name, help_text, value in families:
            family = CounterMetricFamily(name, help_text, labels=["model"])
            family.add_metric(model, value)
            yield family

    def _second_opinion(self) -> Iterator[Metric]:
        """Per camera, from its pipeline's own counters: how much of its footage the second model checked (checked
        / trustcam_frames_analysed is the share) and what it found that the primary did not (docs/pipeline.md)."""
        camera = ["camera"]
        enabled = GaugeMetricFamily("trustcam_second_opinion_enabled", "1 when a second model checks the camera's "
                                    "frames (detector.second_opinion.enabled).", labels=camera)
        checked = CounterMetricFamily("trustcam_second_opinion_frames_checked", "Analysed frames the second model "
                                      "looked at (sample, persisting motion, high_security zones, its own objects).",
                                      labels=camera)
        seconds = CounterMetricFamily("trustcam_second_opinion_seconds", "Time spent in the second model.",
                                      labels=camera)
        only = CounterMetricFamily("trustcam_second_opinion_secondary_only_detections", "Detections of the second "
                                   "model that no primary detection matched.", labels=camera)
        disagreements = CounterMetricFamily("trustcam_second_opinion_disagreements", "Times an object became "
                                            "tracked by the second model alone.", labels=camera)
        evasion = CounterMetricFamily("trustcam_evasion_suspected", "evasion_suspected alerts raised: an object "
                                      "only the second model saw, for disagreement_frames in a row.", labels=camera)
        for worker in getattr(self.service, "workers", []):
            pipeline = getattr(worker, "pipeline", None)
            if pipeline is None:
                continue
            name, s = [worker.camera_name], pipeline.stats
            enabled.add_metric(name, 0.0 if pipeline.second_opinion is None else 1.0)
            checked.add_metric(name, s.second_opinion_checks)
            seconds.add_metric(name, s.second_opinion_seconds)
            only.add_metric(name, s.secondary_only_detections)
            disagreements.add_metric(name, s.disagreements)
            evasion.add_metric(name, s.evasion_alerts)
        yield from (enabled, checked, seconds, only, disagreements, evasion)


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
