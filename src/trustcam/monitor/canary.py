"""The canary: proof that "no event" means "nothing happened", not "not looking".

Every ``canary.every_s`` a real person (the pinned reference image) is composited into a *copy* of the
camera's current frame and run through the camera's own detector path. If it is found, a test alert goes out
on the bus like any other, and every configured sink must confirm delivery (``AlertDelivered``) within
``canary.deadline_s`` of the probe's start. A miss, an AI-blind detector, or a late or failed delivery raises a
``canary_failed`` alert. The composite never reaches the tracker, the events, the recorder, the snapshots or
the drift statistics: it exists only inside :meth:`CanaryMonitor.probe`.

Detection runs on the camera's thread (one or two detector calls every few minutes); waiting for delivery
does not: confirmations arrive through the bus and a timer enforces the deadline.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from trustcam.alerts.model import Alert, AlertDelivered, AlertDeliveryFailed, Severity
from trustcam.bus import Bus
from trustcam.config.schema import AlertsConfig, CameraConfig
from trustcam.ingest.frame import Frame
from trustcam.monitor.canary_target import CanaryTarget, composite, load_target, place
from trustcam.phase import camera_phase
from trustcam.vision.catalog import ModelError
from trustcam.vision.detections import iou_matrix
from trustcam.vision.detectors.failover import DetectorFailure
from trustcam.vision.frame_detector import FrameDetector
from trustcam.vision.labels import COCO_LABELS
from trustcam.vision.motion import polygon_mask
from trustcam.vision.tracker import TrackedObject

log = logging.getLogger(__name__)

Outcome = Literal["passed", "missed", "blind", "late", "failed_delivery", "no_target"]
MIN_IOU = 0.5
ATTEMPTS = 3  # other spots when one is missed: scenery (a table leg) can hide one spot, not all
FIRST_AFTER_S = 15.0  # the first probe soon after start, once the stream and the sinks are up
_PERSON = COCO_LABELS.index("person")


@dataclass(frozen=True)
class CanaryResult:
    """One finished probe (published on the bus for metrics and the timeline)."""

    camera: str
    probe: int
    outcome: Outcome
    time: float  # wall clock when the probe started
    message: str
    score: float | None = None
    detection_latency_s: float | None = None
    delivery_latency_s: float | None = None


@dataclass
class CanaryStatus:
    """What the API/UI and metrics show of a camera's canary."""

    enabled: bool
    probes: int = 0
    passed: int = 0
    failed: int = 0
    consecutive_failures: int = 0
    last_probe_time: float | None = None
    last_result: Outcome | None = None
    last_message: str | None = None
    last_score: float | None = None
    detection_latency_s: float | None = None
    delivery_latency_s: float | None = None
    pending: int = 0


@dataclass
class _Pending:
    probe: int
    alert: Alert
    started: float  # time.time() at probe start
    started_mono: float
    detection_latency_s: float
    score: float
    expected: set[str]
    delivered: dict[str, float] = field(default_factory=dict)  # sink -> seconds after probe start
    timer: threading.Timer | None = None


def expected_sinks(alerts: AlertsConfig) -> set[str]:
    """Sinks that must confirm a canary alert: the log always, MQTT when enabled, every webhook (test alerts
    pass every webhook's kind and severity filters, so each receiver is checked)."""
    sinks = {"log"}
    if alerts.mqtt.enabled:
        sinks.add("mqtt")
    sinks.update(f"webhook:{hook.name}" for hook in alerts.webhooks)
    return sinks


class CanaryMonitor:
    """Schedules and judges one camera's probes; call :meth:`on_frame` from the camera's thread."""

    def __init__(self, camera: str, config: CameraConfig, alerts: AlertsConfig, bus: Bus, detector: FrameDetector,
                 *, target: CanaryTarget | None = None, first_after_s: float = FIRST_AFTER_S,
                 seed: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.camera = camera
        self.config = config.canary
        self.objects = config.objects
        self.alerts = alerts
        self.bus = bus
        self.detector = detector
        self.threshold = config.objects.filter_for("person").threshold
        self._clock = clock
        self._rng = random.Random(seed)
        self._target = target
        self._target_error: str | None = None
        if target is None:
            try:
                self._target = load_target()
            except ModelError as exc:
                self._target_error = str(exc)
                log.warning("camera %s: canary cannot run: %s", camera, exc)
        # the first probe 1-2x first_after_s after start, by camera: probes of cameras started together would stall
        # them all at once (each composites and detects a whole frame), spread they take turns
        self._next = clock() + min(first_after_s * (1.0 + camera_phase(camera)), self.config.every_s)
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._probes = 0
        self._status = CanaryStatus(enabled=self.config.enabled)
        self._mask: np.ndarray | None = None
        self._closed = False
        bus.subscribe(AlertDelivered, self._on_delivered)
        bus.subscribe(AlertDeliveryFailed, self._on_delivery_failed)

    # ---- scheduling (camera thread)
    def on_frame(self, frame: Frame, objects: list[TrackedObject]) -> None:
        """Probe when one is due; the frame itself is never modified."""
        if not self.config.enabled or self._closed:
            return
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self.config.every_s
        try:
            self.probe(frame, objects)
        except Exception as exc:  # a canary bug must not stop the camera; it still counts as a failed probe
            log.exception("camera %s: canary probe crashed", self.camera)
            self._finish(self._probes, time.time(), "missed", f"the probe itself failed ({type(exc).__name__}: "
                         f"{exc}); report this as a trustcam bug")

    def probe(self, frame: Frame, objects: list[TrackedObject] | None = None) -> int:
        """Run one probe now; returns its number. Detection happens here, delivery is judged later."""
        with self._lock:
            self._probes += 1
            number = self._probes
        started, started_mono = time.time(), time.perf_counter()
        if self._target is None:
            self._finish(number, started, "no_target", f"the canary's reference image is unusable: "
                         f"{self._target_error}")
            return number
        image = frame.bgr
        h, w = image.shape[:2]
        if self._mask is None and self.objects.mask:
            self._mask = polygon_mask(self.objects.mask, w, h)
        occupied = [tuple(map(float, o.box)) for o in objects or ()]
        best: tuple[float, tuple[int, int, int, int]] = (0.0, (0, 0, 0, 0))
        try:
            for _ in range(ATTEMPTS):
                box = place(w, h, self._target, occupied, self._rng, self._mask)
                score = self._detect(composite(image, self._target, box), box)
                if score > best[0] or best[1] == (0, 0, 0, 0):
                    best = (score, box)
                if score >= self.threshold:
                    break
                occupied.append(tuple(map(float, box)))  # the next attempt goes somewhere else
        except DetectorFailure as exc:
            self._finish(number, started, "blind", f"no detector could look at the test person ({exc.reason}): "
                         "the camera is not being watched by the AI; see the AI-coverage alerts, restart trustcam "
                         "and check `trustcam models verify`", detection=time.perf_counter() - started_mono)
            return number
        except ValueError as exc:  # the object mask leaves no spot
            self._finish(number, started, "missed", f"{exc}; shrink objects.mask or disable the canary")
            return number
        detection = time.perf_counter() - started_mono
        score, box = best
        if score < self.threshold:
            self._finish(number, started, "missed", (
                f"the test person composited into the picture was not detected (best person score {score:.2f}, "
                f"needed {self.threshold:.2f} with IoU ≥ {MIN_IOU}) in {ATTEMPTS} places: the camera may be too "
                "dark, blurred, covered or mis-sized for people, or the detector degraded; look at the live view "
                "and run `trustcam assess` on recent footage. Until this passes, assume people may go unnoticed"),
                score=score, detection=detection)
            return number
        alert = Alert(kind="canary", severity=Severity.info, camera=self.camera, test=True, source_time=frame.time,
                      message=f"canary test on camera {self.camera}: test person detected ({score:.2f}); "
                      "this is a self-test, no action needed",
                      data={"probe": number, "box": list(box), "score": round(score, 4)})
        pending = _Pending(number, alert, started, started_mono, detection, score, expected_sinks(self.alerts))
        remaining = self.config.deadline_s - (time.perf_counter() - started_mono)
        pending.timer = threading.Timer(max(remaining, 0.0), self._expire, args=(alert.id,))
        pending.timer.daemon = True
        with self._lock:
            self._pending[alert.id] = pending  # before publishing: a sink may confirm inside publish()
            self._status.pending = len(self._pending)
        pending.timer.start()
        self.bus.publish(alert)
        return number

    def _detect(self, image: np.ndarray, box: tuple[int, int, int, int]) -> float:
        """Best score of a person matching ``box`` on the camera's detector path (whole frame + tiles)."""
        dets = self.detector.detect_full(image)
        people = dets.class_ids == _PERSON
        if not people.any():
            return 0.0
        ious = iou_matrix(dets.boxes[people], np.array([box], np.float32))[:, 0]
        scores = dets.scores[people][ious >= MIN_IOU]
        return float(scores.max()) if len(scores) else 0.0

    # ---- delivery (bus / timer threads)
    def _on_delivered(self, message: AlertDelivered) -> None:
        with self._lock:
            pending = self._pending.get(message.alert_id)
            if pending is None:
                return
            pending.delivered[message.sink] = time.perf_counter() - pending.started_mono
            done = pending.expected <= pending.delivered.keys()
            if done:
                self._pending.pop(message.alert_id)
        if done:
            if pending.timer is not None:
                pending.timer.cancel()
            latency = max(pending.delivered[s] for s in pending.expected)
            if latency > self.config.deadline_s:
                self._late(pending, "late", "confirmed only after the deadline")
                return
            sinks = ", ".join(sorted(pending.expected))
            self._finish(pending.probe, pending.started, "passed",
                         f"test person detected ({pending.score:.2f}) and delivered to {sinks}",
                         score=pending.score, detection=pending.detection_latency_s, delivery=latency)

    def _on_delivery_failed(self, message: AlertDeliveryFailed) -> None:
        if not message.dead:
            return  # still retrying: the deadline decides
        with self._lock:
            pending = self._pending.pop(message.alert_id, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        self._late(pending, "failed_delivery",
                   f"{message.sink} gave up after {message.attempts} attempt(s): {message.error}")

    def _expire(self, alert_id: str) -> None:
        with self._lock:
            pending = self._pending.pop(alert_id, None)
        if pending is not None:
            self._late(pending, "late", f"not confirmed within {self.config.deadline_s:g}s")

    def _late(self, pending: _Pending, outcome: Outcome, why: str) -> None:
        missing = sorted(pending.expected - pending.delivered.keys()) or sorted(pending.expected)
        got = ", ".join(sorted(pending.delivered)) or "none"
        self._finish(pending.probe, pending.started, outcome, (
            f"the canary's test alert reached no confirmation from {', '.join(missing)} ({why}; confirmed: {got}): "
            "alerts from this camera may not be reaching you; check the broker / webhook receiver and "
            "`trustcam alerts` dead letters"), score=pending.score, detection=pending.detection_latency_s)

    # ---- results
    def _finish(self, probe: int, started: float, outcome: Outcome, message: str, *, score: float | None = None,
                detection: float | None = None, delivery: float | None = None) -> None:
        with self._lock:
            s = self._status
            s.probes += 1
            s.last_probe_time, s.last_result, s.last_message, s.last_score = started, outcome, message, score
            s.detection_latency_s, s.delivery_latency_s = detection, delivery
            s.pending = len(self._pending)
            if outcome == "passed":
                s.passed += 1
                s.consecutive_failures = 0
            else:
                s.failed += 1
                s.consecutive_failures += 1
        if outcome == "passed":
            log.info("camera %s: canary %d passed (%s; detection %.0f ms, delivery %.0f ms)", self.camera, probe,
                     message, 1000 * (detection or 0), 1000 * (delivery or 0))
        else:
            log.warning("camera %s: canary %d %s: %s", self.camera, probe, outcome, message)
            self.bus.publish(Alert(kind="canary_failed", severity=Severity.high, camera=self.camera,
                                   message=f"canary self-test of camera {self.camera} failed ({outcome}): {message}",
                                   data={"probe": probe, "outcome": outcome, "score": score}))
        # last, so that whoever waits for the result also finds the failure alert on the bus
        self.bus.publish(CanaryResult(self.camera, probe, outcome, started, message, score, detection, delivery))

    def status(self) -> CanaryStatus:
        with self._lock:
            return CanaryStatus(**vars(self._status))

    def close(self) -> None:
        """Stop probing and cancel the deadlines of probes still waiting (the service is stopping)."""
        self._closed = True
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
            self._status.pending = 0
        for p in pending:
            if p.timer is not None:
                p.timer.cancel()
