"""The canary self-test on real footage, real models, the real bus and the real alert dispatcher."""

from __future__ import annotations

import hashlib
import http.server
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from trustcam.alerts.dispatcher import AlertDispatcher
from trustcam.alerts.model import Alert, AlertDelivered
from trustcam.bus import Bus
from trustcam.config.schema import AlertsConfig, CameraConfig, Settings
from trustcam.events.model import EventEnded
from trustcam.ingest.frame import Frame
from trustcam.ingest.source import VideoSource
from trustcam.monitor.canary import CanaryMonitor, CanaryResult
from trustcam.monitor.canary_target import REFERENCE, CanaryTarget, load_target
from trustcam.monitor.metrics import Metrics
from trustcam.monitor.status import StatusBoard
from trustcam.storage.database import open_database
from trustcam.vision import catalog
from trustcam.vision.catalog import ModelError
from trustcam.vision.detections import iou_matrix
from trustcam.vision.detectors import load_detector
from trustcam.vision.detectors.failover import FailoverDetector, ProcessDetector
from trustcam.vision.frame_detector import FrameDetector
from trustcam.web.context import AppContext

SPEC = catalog.ASSETS[REFERENCE]
PROBES = 50


@pytest.fixture(scope="session")
def installed_target(data_dir: Path, installed_models: None) -> Path:
    """The pinned reference image, installed offline from the shared coco128 images into the model dir."""
    path, _ = catalog.install(SPEC, sources=[data_dir / "coco128-train" / "images"], allow_download=False)
    return path


@pytest.fixture(scope="session")
def target(installed_target: Path) -> CanaryTarget:
    return load_target()


def _frames(video: Path, count: int) -> list[Frame]:
    """``count`` frames spread over the clip (copied, so they outlive the decoder)."""
    frames = list(VideoSource(str(video)).frames())
    step = max(1, len(frames) // count)
    return [Frame.from_image(f.bgr.copy(), f.index, f.time) for f in frames[::step][:count]]


class Recorder:
    """Collects bus messages of the given types."""

    def __init__(self, bus: Bus, *types: type) -> None:
        self.items: list[object] = []
        self._cv = threading.Condition()
        for t in types:
            bus.subscribe(t, self._add)

    def _add(self, message: object) -> None:
        with self._cv:
            self.items.append(message)
            self._cv.notify_all()

    def of(self, kind: type, **match: object) -> list:
        with self._cv:
            return [m for m in self.items if isinstance(m, kind) and all(getattr(m, k) == v for k, v in match.items())]

    def wait(self, predicate, timeout: float) -> bool:
        with self._cv:
            return self._cv.wait_for(predicate, timeout)


def _dispatched(tmp_path: Path, settings: Settings | None = None) -> tuple[Bus, AlertDispatcher]:
    settings = settings or Settings(data_dir=tmp_path)
    bus = Bus()
    dispatcher = AlertDispatcher(settings, open_database(f"sqlite:///{tmp_path / 'alerts.db'}"), bus)
    dispatcher.start()
    return bus, dispatcher


def _camera(every_s: float = 300.0, deadline_s: float = 10.0) -> CameraConfig:
    return CameraConfig(source="unused.mp4", canary={"every_s": every_s, "deadline_s": deadline_s})


@pytest.mark.parametrize("clip", ["person_video", "car_video"])
def test_canary_passes_end_to_end_and_is_reliable(clip: str, request, target: CanaryTarget, yolox,
                                                  tmp_path: Path) -> None:
    """(a) The composited person is found on frames of both clips and the real dispatcher's log sink confirms
    delivery; over 50 probes it passes at least 98% of the time (a flaky canary is a false-alarm generator)."""
    bus, dispatcher = _dispatched(tmp_path)
    seen = Recorder(bus, CanaryResult, Alert, AlertDelivered)
    canary = CanaryMonitor("cam", _camera(), AlertsConfig(), bus, FrameDetector(yolox), target=target, seed=7)
    try:
        frames = _frames(request.getfixturevalue(clip), PROBES)
        for frame in frames:
            before = hashlib.sha256(frame.bgr.tobytes()).hexdigest()
            number = canary.probe(frame, [])
            assert hashlib.sha256(frame.bgr.tobytes()).hexdigest() == before, "the analysed frame was modified"
            assert seen.wait(lambda n=number: seen.of(CanaryResult, probe=n), 10), f"probe {number} never finished"
    finally:
        canary.close()
        dispatcher.stop()
    results = seen.of(CanaryResult)
    passed = [r for r in results if r.outcome == "passed"]
    status = canary.status()
    detection = 1000 * np.median([r.detection_latency_s for r in passed])
    delivery = 1000 * np.median([r.delivery_latency_s for r in passed])
    print(f"\n{clip}: canary passed {len(passed)}/{len(results)}; median score "
          f"{np.median([r.score for r in passed]):.3f}, detection {detection:.0f} ms, delivery {delivery:.0f} ms")
    assert len(results) == PROBES
    assert len(passed) >= 0.98 * PROBES, [r.message for r in results if r.outcome != "passed"]
    assert status.probes == PROBES and status.passed == len(passed)
    assert status.last_probe_time is not None and status.detection_latency_s is not None
    tests = [a for a in seen.of(Alert) if a.kind == "canary"]
    assert len(tests) == len(passed) and all(a.test and a.source_time is not None for a in tests)
    assert {"probe", "box", "score"} <= set(tests[0].data)
    delivered = {(d.alert_id, d.sink) for d in seen.of(AlertDelivered)}
    assert all((a.id, "log") in delivered for a in tests), "every test alert was confirmed by the log sink"
    placed = [tuple(a.data["box"]) for a in tests]
    assert len(set(placed)) > PROBES // 2, "the canary moves between probes"
    heights = [(b[3] - b[1]) / frames[0].height for b in placed]
    assert min(heights) >= 0.35 and max(heights) <= 0.5


def test_a_detector_that_finds_nothing_fails_the_canary(target: CanaryTarget, person_video: Path,
                                                        installed_models: None, tmp_path: Path) -> None:
    """(b) The real model, but demanding 0.99: nothing is found → a high-severity canary_failed alert."""
    bus, dispatcher = _dispatched(tmp_path)
    seen = Recorder(bus, CanaryResult, Alert)
    strict = FrameDetector(load_detector("yolox-nano", score_threshold=0.99))
    canary = CanaryMonitor("cam", _camera(), AlertsConfig(), bus, strict, target=target, seed=1)
    try:
        canary.probe(_frames(person_video, 1)[0], [])
    finally:
        canary.close()
        dispatcher.stop()
    [result] = seen.of(CanaryResult)
    assert result.outcome == "missed" and result.score == 0.0
    [failed] = [a for a in seen.of(Alert) if a.kind == "canary_failed"]
    assert failed.severity.value == "high" and not failed.test and failed.camera == "cam"
    assert "not detected" in failed.message and "trustcam assess" in failed.message
    assert not [a for a in seen.of(Alert) if a.kind == "canary"], "no test alert without a detection"
    assert canary.status().consecutive_failures == 1


def test_an_ai_blind_camera_fails_the_canary(target: CanaryTarget, person_video: Path, installed_models: None,
                                             tmp_path: Path) -> None:
    """(b) The supervised detector with its model process killed and no backup: the canary must fail."""
    bus = Bus()
    seen = Recorder(bus, CanaryResult, Alert)
    primary = ProcessDetector("yolox-nano", deadline_s=2.0)
    detector = FailoverDetector(primary, [], restart_backoff_s=60)
    canary = CanaryMonitor("cam", _camera(), AlertsConfig(), bus, FrameDetector(detector), target=target, seed=1)
    try:
        frame = _frames(person_video, 1)[0]
        primary._process.kill()  # the model process dies (as a native crash would)
        primary._process.join(5)
        canary.probe(frame, [])
    finally:
        canary.close()
        detector.close()
    [result] = seen.of(CanaryResult)
    assert result.outcome == "blind"
    [failed] = [a for a in seen.of(Alert) if a.kind == "canary_failed"]
    assert "no detector" in failed.message and "not being watched" in failed.message


class _Failing(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_unconfirmed_delivery_fails_the_canary_within_its_deadline(target: CanaryTarget, person_video: Path,
                                                                    yolox, tmp_path: Path, monkeypatch) -> None:
    """(c) A webhook receiver that answers 503: the log confirms, the webhook never does → canary_failed
    naming the webhook, raised at the deadline (not later)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("CANARY_TEST_SECRET", "s3cret-s3cret-s3cret")
    settings = Settings(data_dir=tmp_path, alerts={"webhooks": [
        {"name": "ops", "url": f"http://127.0.0.1:{server.server_port}/hook", "secret_env": "CANARY_TEST_SECRET",
         "backoff_s": 0.2}]})
    bus, dispatcher = _dispatched(tmp_path, settings)
    seen = Recorder(bus, CanaryResult, Alert, AlertDelivered)
    deadline = 2.0
    canary = CanaryMonitor("cam", _camera(deadline_s=deadline), settings.alerts, bus, FrameDetector(yolox),
                           target=target, seed=3)
    try:
        frame = _frames(person_video, 1)[0]
        start = time.monotonic()
        canary.probe(frame, [])
        assert seen.wait(lambda: seen.of(CanaryResult), deadline + 2)
        took = time.monotonic() - start
    finally:
        canary.close()
        dispatcher.stop(drain_s=0)
        server.shutdown()
    [result] = seen.of(CanaryResult)
    assert result.outcome == "late", result.message
    assert deadline - 0.1 <= took <= deadline + 1.0
    [test_alert] = [a for a in seen.of(Alert) if a.kind == "canary"]
    assert [d.sink for d in seen.of(AlertDelivered, alert_id=test_alert.id)] == ["log"]
    [failed] = [a for a in seen.of(Alert) if a.kind == "canary_failed"]
    assert "webhook:ops" in failed.message and "confirmed: log" in failed.message


def test_no_confirmation_at_all_fails_the_canary(target: CanaryTarget, person_video: Path, yolox) -> None:
    """(c) Nothing delivers alerts (no dispatcher on the bus): the canary notices within the deadline."""
    bus = Bus()
    seen = Recorder(bus, CanaryResult, Alert)
    canary = CanaryMonitor("cam", _camera(deadline_s=1.0), AlertsConfig(), bus, FrameDetector(yolox),
                           target=target, seed=5)
    canary.probe(_frames(person_video, 1)[0], [])
    assert seen.wait(lambda: seen.of(CanaryResult), 3)
    [result] = seen.of(CanaryResult)
    assert result.outcome == "late" and "log" in result.message
    assert [a.kind for a in seen.of(Alert)] == ["canary", "canary_failed"]


def test_the_composite_never_reaches_events_or_snapshots(installed_target: Path, person_video: Path,
                                                         tmp_path: Path) -> None:
    """(d) A live service on a file camera probing every 5 s: the probes pass, and no event (nor its
    snapshot) in the database or on the bus comes from a canary's box."""
    from trustcam.service import Service

    camera = CameraConfig(source=str(person_video), canary={"every_s": 5, "deadline_s": 10})
    service = Service(Settings(data_dir=tmp_path, cameras={"cam": camera}))
    seen = Recorder(service.bus, CanaryResult, Alert, EventEnded)
    board = AppContext.for_service(service, None).status  # what /api/cameras shows
    service.start()
    try:
        assert seen.wait(lambda: len(seen.of(CanaryResult)) >= 2, 40), "two probes within 40 s"
    finally:
        service.stop()
    results = seen.of(CanaryResult)
    assert all(r.outcome == "passed" for r in results), [r.message for r in results]
    boxes = np.array([a.data["box"] for a in seen.of(Alert) if a.kind == "canary"], np.float32)
    events = [m.event for m in seen.of(EventEnded)]
    rows = service.store.recent(1000)
    assert len(rows) == len(events)
    assert events, "the clip's real people still become events"
    overlap = iou_matrix(np.array([e.best_box for e in events], np.float32), boxes)
    assert float(overlap.max()) < 0.5, "an event was made from the canary's composite"
    assert service.workers[0].canary is not None and service.workers[0].canary.status().passed == len(results)
    # the status board and the metrics show the last probe
    last = results[-1]
    shown = board.camera("cam")
    assert shown["canary"] == {"outcome": "passed", "passed": True, "time": last.time, "probe": last.probe,
                               "message": last.message, "score": last.score,
                               "detection_latency_s": last.detection_latency_s,
                               "delivery_latency_s": last.delivery_latency_s}
    assert not [c for c in shown["alerts"] if c["kind"] == "canary"]
    text = service.metrics.render().decode()
    assert 'trustcam_canary_last_result{camera="cam"} 1.0' in text
    stamp = re.search(r'^trustcam_canary_last_probe_timestamp_seconds\{camera="cam"\} (\S+)$', text, re.M)
    assert stamp and float(stamp.group(1)) == pytest.approx(last.time, abs=1e-3)


def test_a_tampered_reference_image_is_refused(installed_target: Path, tmp_path: Path) -> None:
    """(e) A reference image whose sha256 differs from the pin is refused, naming the fix."""
    directory = tmp_path / "models"
    copy = SPEC.path(directory)
    copy.parent.mkdir(parents=True)
    shutil.copyfile(installed_target, copy)
    assert load_target(directory).bgr.size > 0
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"sha256.*refused.*--force canary-person"):
        load_target(directory)
    result = subprocess.run([sys.executable, "-m", "trustcam.cli", "models", "verify", REFERENCE],
                            capture_output=True, text=True, timeout=60,
                            env={**__import__("os").environ, "TRUSTCAM_MODEL_DIR": str(directory)})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "reference image 'canary-person'" in result.stderr and "refused" in result.stderr


def test_a_missing_reference_image_fails_every_probe_with_the_fix(person_video: Path, yolox, tmp_path: Path,
                                                                  monkeypatch) -> None:
    """Without the reference image the canary cannot look, which is itself an alert naming the install command."""
    monkeypatch.setenv("TRUSTCAM_MODEL_DIR", str(tmp_path / "empty"))
    bus = Bus()
    seen = Recorder(bus, Alert)
    board, metrics = StatusBoard(bus, ["cam"]), Metrics(None, bus)
    canary = CanaryMonitor("cam", _camera(), AlertsConfig(), bus, FrameDetector(yolox))
    canary.probe(_frames(person_video, 1)[0], [])
    [failed] = seen.of(Alert)
    assert failed.kind == "canary_failed" and "trustcam models install canary-person" in failed.message
    shown = board.camera("cam")  # a failed probe is a badge and an active condition until one passes
    assert shown["canary"]["outcome"] == "no_target" and shown["canary"]["passed"] is False
    [condition] = shown["alerts"]
    assert (condition["kind"], condition["detail"]) == ("canary", "no_target")
    assert 'trustcam_canary_last_result{camera="cam"} 0.0' in metrics.render().decode()
