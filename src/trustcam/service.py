"""Wiring: turn a config into running camera pipelines, for a file (``analyze``) or live (``run``).

Each camera has a reader thread (decoding releases the GIL, so it overlaps with detection) feeding its
pipeline through a small queue. Live cameras drop the oldest frame when analysis falls behind rather
than drifting further and further from real time; files never drop.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trustcam.alerts.dispatcher import AlertDispatcher
from trustcam.alerts.model import Alert, Severity
from trustcam.bus import Bus
from trustcam.config.schema import CameraConfig, DriftConfig, Settings
from trustcam.events.builder import SnapshotStore
from trustcam.events.model import CameraCoverage, EventEnded
from trustcam.ingest.frame import Frame
from trustcam.ingest.source import DecodeReport, SourceError, TapFanout, VideoSource, source_kind
from trustcam.ingest.stream import LiveStream
from trustcam.monitor.canary import CanaryMonitor
from trustcam.monitor.drift import DriftMonitor
from trustcam.monitor.health import HealthAlert, HealthCleared, HealthKind, HealthMonitor
from trustcam.monitor.metrics import Metrics
from trustcam.monitor.tamper import TamperDetector
from trustcam.pipeline import CameraPipeline
from trustcam.redaction import redact_urls
from trustcam.storage.database import open_database
from trustcam.storage.event_store import EventStore
from trustcam.storage.leases import DEFAULT_TTL_S, Fences, LeaseKeeper, Leases
from trustcam.storage.private import private_dir
from trustcam.storage.recorder import Recorder, SegmentSink, SegmentStore
from trustcam.storage.witness import build_witness
from trustcam.vision.detectors.base import Detector
from trustcam.vision.detectors.failover import CoverageChange, FailoverDetector, ProcessDetector
from trustcam.vision.detectors.onnx_models import load_detector
from trustcam.vision.detectors.service import DetectorView, SharedDetectors
from trustcam.vision.tracker import TrackedObject

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from trustcam.security.access import AccessControl
    from trustcam.storage.vault import Vault
    from trustcam.vision.face_tracks import FaceModels

log = logging.getLogger(__name__)
_END = object()
PIPELINE_FAILED: HealthKind = "pipeline_failed"  # a camera's analysis failed and is being restarted
FACE_SHRED_EVERY_S = 3600.0  # expired face enrolments are shredded at start and this often while running


def build_detector(settings: Settings) -> Detector:
    cfg = settings.detector
    return load_detector(cfg.model, threads=cfg.threads, score_threshold=cfg.score_threshold)


def build_second_opinion(settings: Settings) -> Detector | None:
    """The second model of ``detector.second_opinion`` (in-process; it runs on a share of frames), None when no
    camera uses it (it is on globally or per camera: ``cameras.<name>.second_opinion.enabled``)."""
    cfg = settings.detector
    if not cfg.second_opinion.enabled and not settings.second_opinion_anywhere:
        return None
    return load_detector(cfg.second_opinion.model, threads=cfg.threads, score_threshold=cfg.score_threshold)


def build_face_models(settings: Settings, engine: Engine | None = None,
                      cameras: Iterable[CameraConfig] | None = None) -> FaceModels | None:
    """The face recogniser and the enrolled gallery, shared by every camera with ``faces.enabled``; None when no
    camera has it on, and then no face model is loaded and no face key is touched (off means off)."""
    cameras = list(cameras) if cameras is not None else [c for c in settings.cameras.values() if c.enabled]
    if not any(c.faces.enabled for c in cameras):
        return None
    from trustcam.storage.faces import FaceStore
    from trustcam.storage.keys import Keyring
    from trustcam.vision.face_tracks import FaceModels
    from trustcam.vision.faces import FaceRecognizer

    engine = engine if engine is not None else open_database(settings.resolved_database_url)
    return FaceModels(FaceRecognizer(), FaceStore(engine, Keyring(settings.vault), settings.data_dir))


def build_shared_detectors(settings: Settings) -> SharedDetectors | None:
    """For live cameras: ONE detector service per process for the primary model (a hang or crash cannot take the
    cameras down; every camera's calls are batched into it) and the backups loaded once, in-process. None when
    ``detector.failover`` is empty (each camera then runs the primary in-process)."""
    cfg = settings.detector
    if not cfg.failover:
        return None
    return SharedDetectors(cfg.model, cfg.failover, threads=cfg.threads, score_threshold=cfg.score_threshold,
                           deadline_s=cfg.call_deadline_s, workers=min(os.cpu_count() or 1, 4))


def build_supervised_detector(settings: Settings, on_change: Callable[[CoverageChange], None],
                              shared: SharedDetectors | None = None) -> Detector:
    """For live cameras: the primary model out of process, failing over within ``call_deadline_s`` to the
    backups. With ``shared`` (:func:`build_shared_detectors`) the camera gets its own client of the node's detector
    service; without, a detector process of its own (the caller closes it through the returned detector)."""
    cfg = settings.detector
    if shared is not None:  # the node's service or pool (which also runs a model without backups out of process)
        return shared.for_camera(on_change)  # type: ignore[return-value]
    if not cfg.failover:
        return build_detector(settings)
    primary = ProcessDetector(cfg.model, threads=cfg.threads, score_threshold=cfg.score_threshold,
                              deadline_s=cfg.call_deadline_s)
    backups = [load_detector(name, threads=cfg.threads, score_threshold=cfg.score_threshold)
               for name in cfg.failover if name != cfg.model]
    return FailoverDetector(primary, backups, on_change=on_change)  # type: ignore[return-value]


def detect_size(camera: CameraConfig) -> tuple[int, int] | None:
    d = camera.detect
    return (d.width, d.height) if d.width and d.height else None


def _threaded(frames: Iterator[Frame], maxsize: int, drop_oldest: bool, stop: threading.Event,
              errors: list[BaseException], on_drop: Callable[[], None] | None = None) -> Iterator[Frame]:
    """Decode in a background thread; yield frames here. Reader exceptions are re-raised to the consumer.
    ``on_drop`` is called for each frame dropped (``drop_oldest``): the real count, not sent minus analysed."""
    q: queue.Queue[object] = queue.Queue(maxsize)

    def reader() -> None:
        try:
            for frame in frames:
                if stop.is_set():
                    break
                if drop_oldest:
                    while True:
                        try:
                            q.put_nowait(frame)
                            break
                        except queue.Full:
                            with contextlib.suppress(queue.Empty):
                                q.get_nowait()
                                if on_drop is not None:
                                    on_drop()
                else:
                    while not stop.is_set():
                        try:
                            q.put(frame, timeout=0.2)
                            break
                        except queue.Full:
                            continue
        except BaseException as exc:  # handed to the consumer thread, which reports it
            errors.append(exc)
        finally:
            q.put(_END)

    thread = threading.Thread(target=reader, name="reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                break
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=5)
    if errors:
        raise errors[0]


@dataclass
class AnalyzeResult:
    report: DecodeReport
    pipeline: CameraPipeline
    seconds: float
    error: str | None = None


def analyze_file(path: str, camera: CameraConfig, settings: Settings, bus: Bus, detector: Detector,
                 snapshot_dir: Path | None, name: str = "file", secondary: Detector | None = None,
                 faces: FaceModels | None = None) -> AnalyzeResult:
    """Run the pipeline over a whole file as fast as possible; damage stops decoding, not the analysis
    of what came before it. ``secondary`` is the second-opinion model and ``faces`` the face models (each built
    from the settings when None, and only when the camera uses them)."""
    source = VideoSource(path, fps=camera.detect.fps, size=detect_size(camera), timeout_s=camera.timeout_s)
    if secondary is None:
        secondary = build_second_opinion(settings)
    if faces is None:
        faces = build_face_models(settings, cameras=[camera])
    pipeline = CameraPipeline(name, camera, settings, detector, bus, snapshot_dir, secondary=secondary,
                              faces=faces)
    stop = threading.Event()
    start = time.perf_counter()
    error = None
    try:
        for frame in _threaded(source.frames(), 8, False, stop, []):
            pipeline.process(frame)
    except SourceError as exc:
        error = str(exc)
    finally:
        pipeline.close()
    if error is None and source.report.errors:
        error = (f"{path}: damaged ({len(source.report.errors)} problem(s), first: {source.report.errors[0]}); "
                 f"the {source.report.decoded} frames before and around the damage were analysed")
    return AnalyzeResult(source.report, pipeline, time.perf_counter() - start, error)


def paced(frames: Iterator[Frame], stop: threading.Event) -> Iterator[Frame]:
    """Play a file like a live camera: at its own speed, with wall-clock times, looping without going back
    in time (``run`` with a file source is a test camera, not a batch job)."""
    origin: float | None = None
    last_media = 0.0
    offset = 0.0
    for frame in frames:
        if origin is None:
            origin = time.time()
        if frame.time + offset < last_media:  # the file restarted: continue the clock from where it was
            offset = last_media - frame.time
        last_media = frame.time + offset
        delay = origin + last_media - time.time()
        if delay > 0 and stop.wait(delay):
            return
        frame.time = origin + last_media
        yield frame


class DriftWatch:
    """Learns a camera's baseline on first start (then keeps it across restarts) and checks drift periodically."""

    def __init__(self, camera: str, config: DriftConfig, path: Path, bus: Bus) -> None:
        self.config = config
        self.path = path
        self.bus = bus
        self.monitor = DriftMonitor(camera, window_s=config.window_s, min_samples=config.min_samples)
        if path.is_file():
            try:
                self.monitor = DriftMonitor.load(camera, path)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("camera %s: drift baseline %s unreadable (%s); learning a new one", camera, path, exc)
        self._learning_since: float | None = None
        self._last_check = 0.0

    def on_frame(self, frame: Frame, objects: list[TrackedObject]) -> None:
        self.monitor.observe(frame, objects)
        if not self.monitor.baseline:
            self._learning_since = self._learning_since if self._learning_since is not None else frame.time
            if frame.time - self._learning_since >= self.config.learn_s:
                self.monitor.freeze_baseline()
                self.save()
                log.info("camera %s: drift baseline learned (%s)", self.monitor.camera, self.path)
        elif frame.time - self._last_check >= self.config.check_every_s:
            self._last_check = frame.time
            for alert in self.monitor.check(frame.time):
                self.bus.publish(alert)

    def save(self) -> None:
        if self.monitor.baseline:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.monitor.save(self.path)


class CameraWorker(threading.Thread):
    """Runs one live camera until stopped; never exits on its own. Camera errors are the stream's to handle (it
    reconnects); an unexpected error in the analysis (a bug, a broken model, a full disk) restarts the pipeline after
    a backoff (1 s doubling to 60 s, back to 1 s once it ran healthy for a minute) and raises a ``health`` alert
    naming the error, cleared once it is healthy again: a camera that silently stops analysing is worse than one
    that is visibly down.

    With ``record.enabled`` and a ``vault``, a :class:`Recorder` taps the stream's packets (the same connection,
    no extra decoding) and gets each frame's motion and the camera's events from the bus.

    With a ``lease`` (several machines), the worker waits as a standby until it holds the camera's lease, keeps it
    renewed, and stops the camera for good when it loses it (``lease_lost`` says why): its late writes are refused
    by the fencing token anyway, this only stops the wasted work. It releases the lease after its last writes.
    """

    restart_first_s = 1.0  # first delay before restarting a failed pipeline; doubles at each failure in a row
    restart_max_s = 60.0
    healthy_after_s = 60.0  # a run this long without an error resets the delay and clears the alert

    def __init__(self, name: str, camera: CameraConfig, settings: Settings, bus: Bus, snapshot_dir: Path,
                 vault: SegmentStore | SegmentSink | None = None, snapshot_store: SnapshotStore | None = None,
                 faces: FaceModels | None = None, lease: LeaseKeeper | None = None,
                 detectors: SharedDetectors | None = None, secondary: Detector | None = None,
                 on_lease: Callable[[], None] | None = None) -> None:
        """``detectors`` and ``secondary`` are the node's shared detector service and second-opinion model
        (:class:`Service` builds them once for all cameras); when None the worker builds and owns its own.
        ``on_lease`` runs once the lease is held, before anything is analysed (the camera's vault recovery)."""
        super().__init__(name=f"camera-{name}", daemon=True)
        self.camera_name = name
        self.lease = lease
        self.on_lease = on_lease
        self.lease_lost: str | None = None
        self.recorder = (Recorder(name, camera.record, vault, bus)
                         if camera.record.enabled and vault is not None else None)
        # every camera has taps, recorded or not: live video (trustcam.web.live_mse) attaches to them when watched
        self.taps = TapFanout()
        self.frames_dropped = 0  # frames the live queue dropped because analysis fell behind (trustcam_frames_dropped)
        # up to one second of frames: network streams deliver in bursts (an MPEG-TS chunk holds several frames), so
        # a 2-frame queue dropped frames with the CPU half idle; a second is still "real time" (lag <= 1 s)
        self.queue_depth = max(2, math.ceil(camera.detect.fps))
        if self.recorder is not None:
            self.taps.add(self.recorder.on_packet, self.recorder.on_connection)
        self.stream = LiveStream(camera.source, fps=camera.detect.fps, size=detect_size(camera),
                                 timeout_s=camera.timeout_s, rtsp_transport=camera.rtsp_transport,
                                 packet_tap=self.taps.on_packet, connection_tap=self.taps.on_connection)
        self._own_detectors = build_shared_detectors(settings) if detectors is None else None
        detector = build_supervised_detector(settings, lambda change: bus.publish(CameraCoverage(name, change)),
                                             detectors or self._own_detectors)
        secondary = build_second_opinion(settings) if secondary is None else DetectorView(secondary)  # type: ignore
        faces = faces if camera.faces.enabled else None
        self.pipeline = CameraPipeline(name, camera, settings, detector, bus, snapshot_dir, snapshot_store,
                                       secondary=secondary, faces=faces)
        self._new_pipeline: Callable[[], CameraPipeline] = lambda: CameraPipeline(
            name, camera, settings, detector, bus, snapshot_dir, snapshot_store, secondary=secondary, faces=faces)
        self.bus = bus
        # offline = no picture for two connection timeouts: one slow reconnect is not yet an outage
        self.health = HealthMonitor(name, camera.detect.fps, offline_after_s=max(5.0, 2 * camera.timeout_s))
        self.tamper = TamperDetector(name, confirm_s=camera.tamper.confirm_s) if camera.tamper.enabled else None
        self.drift = DriftWatch(name, camera.drift, settings.data_dir / "drift" / f"{name}.json", bus) \
            if camera.drift.enabled else None
        # the canary self-test: a person composited into a copy of a frame, on this camera's detector path
        self.canary = CanaryMonitor(name, camera, settings.alerts, bus, self.pipeline.detector) \
            if camera.canary.enabled else None
        self._stop_event = threading.Event()
        # live view (trustcam.web.live.LiveHub.publish): gets each analysed frame and its objects, keeps references
        self.on_result: Callable[[str, Frame, list[TrackedObject]], None] | None = None
        self.restarts = 0  # pipeline restarts after unexpected errors (status and tests read it)
        self._restart_delay = self.restart_first_s
        self._failure: str | None = None  # the error of the active "pipeline_failed" health alert

    def stop(self) -> None:
        self._stop_event.set()
        self.stream.stop()

    def _on_lease_lost(self, reason: str) -> None:
        """Stop for good, and say so: a ``health`` alert (queued in the outbox when the database answers; always in
        the log) tells the operator that this process no longer runs the camera and why."""
        self.lease_lost = reason
        self.stop()
        holder = self.lease.holder if self.lease is not None else None
        self.bus.publish(Alert(kind="health", severity=Severity.warning, camera=self.camera_name,
                               message=f"camera {self.camera_name}: {holder} stopped running it: {reason}",
                               data={"condition": "lease_lost", "holder": holder}))

    def run(self) -> None:
        recorder = self.recorder
        try:
            if self.lease is not None and not self.lease.acquire(self._stop_event, self._on_lease_lost):
                return  # stopped while waiting as a standby
            if self.lease is not None and self.on_lease is not None:
                self.on_lease()
            while not self._stop_event.is_set():
                started = time.monotonic()
                try:
                    self._analyse(started)
                    if self._stop_event.is_set():
                        break
                    raise RuntimeError("the camera's frame stream ended although the camera was not stopped")
                except Exception as exc:
                    if self._stop_event.wait(self._failed(exc, time.monotonic() - started)):
                        break
                    self.restarts += 1
                    log.warning("camera %s: analysis restarted (restart %d)", self.camera_name, self.restarts)
        finally:
            if self.drift is not None:
                self.drift.save()
            if self.canary is not None:
                self.canary.close()
            self.pipeline.close()  # publishes the last EventEnded messages, which the recorder still needs
            close_detector = getattr(self.pipeline.detector.detector, "close", None)
            if close_detector is not None:
                close_detector()  # this camera's client of the detector service (or its own detector process)
            if self._own_detectors is not None:
                self._own_detectors.close()
            if recorder is not None:
                recorder.close()
            if self.lease is not None:
                self.lease.release()  # after the last events and segments: they still carried the token

    def _analyse(self, started: float) -> None:
        """One run of the analysis: frames from the stream through the pipeline until :meth:`stop` (returns) or an
        unexpected error (raised)."""
        frames = self.stream.frames()
        if source_kind(self.stream.url) == "file":
            frames = paced(frames, self._stop_event)
        run_over = threading.Event()  # ends this run's reader thread; the worker's own stop event stays clear
        with contextlib.closing(_threaded(frames, self.queue_depth, True, run_over, [], self._count_drop)) as analysed:
            self._analyse_frames(analysed, started)

    def _count_drop(self) -> None:
        self.frames_dropped += 1  # one reader thread per camera increments it; metrics only read it

    def _analyse_frames(self, frames: Iterator[Frame], started: float) -> None:
        """Each frame: health, tamper, pipeline, drift, canary, live view, recorder; clears a pipeline failure once
        this run has lasted ``healthy_after_s``."""
        recorder = self.recorder
        for frame in frames:
            for health_event in self.health.on_frame(frame.time, time.time()):
                self.bus.publish(health_event)
            for tamper_event in self.tamper.update(frame) if self.tamper is not None else ():
                self.bus.publish(tamper_event)
            result = self.pipeline.process(frame)
            if self.drift is not None:
                self.drift.on_frame(frame, result.objects)
            if self.canary is not None:
                self.canary.on_frame(frame, result.objects)  # probes a copy; this frame stays untouched
            if self.on_result is not None:
                self.on_result(self.camera_name, frame, result.objects)
            if recorder is not None:
                recorder.on_frame_result(frame.time, bool(result.motion_boxes))
            if self._failure is not None and time.monotonic() - started >= self.healthy_after_s:
                self._recovered()

    def _failed(self, exc: Exception, ran_s: float) -> float:
        """Log ``exc``, swap in a fresh pipeline, raise the health alert (once per distinct error, no alert storm
        from a camera that keeps failing); returns how long to wait before the next run."""
        if ran_s >= self.healthy_after_s:  # it had been healthy: this is a new failure, not one more in a row
            self._restart_delay = self.restart_first_s
        delay = self._restart_delay
        self._restart_delay = min(2 * delay, self.restart_max_s)
        what = redact_urls(f"{type(exc).__name__}: {exc}")[:500]  # alerts leave the machine: no camera password
        log.error("camera %s: analysis failed (%s); restarting it in %g s", self.camera_name, what, delay,
                  exc_info=exc)
        self._replace_pipeline()
        if what != self._failure:
            self._failure = what
            self.bus.publish(HealthAlert(
                self.camera_name, PIPELINE_FAILED, time.time(),
                f"camera {self.camera_name}: analysis failed ({what}); restarting it in {delay:g} s",
                {"error": what, "restarts": self.restarts, "retry_in_s": delay}))
        return delay

    def _replace_pipeline(self) -> None:
        """Finish the failed pipeline's open events (the store and the recorder need their ends) and start over
        with a fresh one (same detector): whatever state the error left behind is gone."""
        try:
            self.pipeline.close()
        except Exception:
            log.exception("camera %s: closing the failed pipeline failed too", self.camera_name)
        self.pipeline = self._new_pipeline()

    def _recovered(self) -> None:
        log.info("camera %s: analysis healthy again after %d restart(s)", self.camera_name, self.restarts)
        self._failure = None
        self._restart_delay = self.restart_first_s
        self.bus.publish(HealthCleared(self.camera_name, PIPELINE_FAILED, time.time()))


def warn_legacy_exports(data_dir: Path) -> list[Path]:
    """Bundles that versions before streamed exports left in ``<data_dir>/exports``: decrypted footage outside the
    vault, so retention and crypto-shredding never reach it. Not deleted for the user (they may be evidence handed
    out); named, with the fix."""
    folder = data_dir / "exports"
    left = sorted(folder.glob("*.zip")) if folder.is_dir() else []
    if left:
        log.warning("%d evidence bundle(s) written by an older version lie decrypted in %s, outside the vault's "
                    "encryption, retention and crypto-shredding: keep copies where they belong, then delete them "
                    "(rm -r %s); exports are now streamed and never written on the server", len(left), folder,
                    folder)
    return left


class Service:
    """All enabled cameras of a config, the event store, the bus and (when a camera records) the vault."""

    def __init__(self, settings: Settings, *, lease_holder: str | None = None,
                 lease_ttl_s: float = DEFAULT_TTL_S, deliver_alerts: bool = True,
                 detectors: SharedDetectors | None = None) -> None:
        """``lease_holder`` (unique per process, e.g. :func:`trustcam.storage.leases.holder_id`) runs each camera
        under a lease with fenced writes, for several machines on one database; None (single box) changes nothing.
        ``deliver_alerts=False`` queues alerts in the outbox without sending them: under ``trustcam cluster`` one
        dispatcher (the head's) delivers every camera's alerts. ``detectors`` replaces the detector service this
        process would start (under the cluster: the node's pool, ``trustcam.cluster.detector_pool.PoolDetectors``)."""
        self.settings = settings
        self.deliver_alerts = deliver_alerts
        self.bus = Bus()
        private_dir(settings.data_dir)  # owner-only whatever the umask: footage metadata, drift, snapshots
        warn_legacy_exports(settings.data_dir)
        self.engine = open_database(settings.resolved_database_url)
        self.leases = Leases(self.engine) if lease_holder is not None else None
        self.fences = Fences() if lease_holder is not None else None
        self.store = EventStore(self.engine, self.fences, buffer=settings.database_buffer)
        self.store.attach(self.bus)
        self.bus.subscribe(EventEnded, lambda m: log.info("event %s: %s on %s (%.2f)", m.event.id,
                                                          m.event.label, m.event.camera, m.event.best_score))
        # health, tamper, drift, coverage, rule and storage messages become Alerts: outbox → log, MQTT, webhooks
        self.alerts = AlertDispatcher(settings, self.engine, self.bus)
        # every signed checkpoint (footage and audit) is also written outside the database: the service log, the
        # witness file, and MQTT (the MQTT sink subscribes to WitnessEntry on the bus)
        self.witness = build_witness(settings, publish=self.bus.publish)
        self._access: AccessControl | None = None
        self._access_lock = threading.Lock()
        self.metrics = Metrics(self, self.bus)
        snapshots = settings.data_dir / "snapshots"
        cameras = {name: cam for name, cam in settings.cameras.items() if cam.enabled}
        self.vault: Vault | None = None
        if any(cam.record.enabled for cam in cameras.values()):  # keys and storage only when something records
            from trustcam.storage.vault import Vault

            self.vault = Vault(settings.vault, self.engine, on_alert=lambda m: log.warning("vault: %s", m),
                               witness=self.witness, fences=self.fences)
            # an ended event's record is sealed into its camera's chain once its row is stored: through the event
            # store's write buffer, so an event stored after a database outage is sealed too
            self.store.seal = self.vault.seal_event
        self.recovery = None
        self.retention = None
        sink = None
        snapshot_store = None
        if self.vault is not None:
            from trustcam.storage.recovery import recover
            from trustcam.storage.retention import GuardedVault, RetentionWorker, StorageGuard

            # a crash (kill -9) leaves at most the open segment to clean up. With a lease (cluster), other processes
            # record other cameras on the same root, and until this one holds its camera's lease another may still be
            # recording it: each camera is recovered alone, by its worker, once it holds the lease
            if lease_holder is None:
                self.recovery = recover(self.vault)
                log.log(logging.INFO if self.recovery.ok else logging.WARNING, "vault recovery: %s",
                        self.recovery.summary())
            guard = StorageGuard(self.vault, settings, self.bus.publish)
            self.retention = RetentionWorker(self.vault, settings, publish=self.bus.publish, guard=guard)
            sink = GuardedVault(self.vault, guard)
            vault = self.vault

            def snapshot_store(camera: str, _event_id: str, jpeg: bytes) -> str:
                return vault.store_blob(camera, jpeg)  # snapshots are encrypted at rest like the footage

        # face recognition: models and gallery only when a camera has faces.enabled (shared, thread-safe)
        self.face_models = build_face_models(settings, self.engine, cameras.values())
        self._faces_shredded_at: float | None = None
        # one detector service and one second-opinion model for all cameras, not one per camera (memory)
        self.detectors = detectors if detectors is not None else build_shared_detectors(settings) if cameras else None
        secondary = build_second_opinion(settings) if cameras else None
        self.workers = [CameraWorker(name, cam, settings, self.bus, snapshots, sink, snapshot_store,
                                     self.face_models, self._lease_keeper(name, lease_holder, lease_ttl_s),
                                     detectors=self.detectors, secondary=secondary,
                                     on_lease=lambda camera=name: self._recover_camera(camera))
                        for name, cam in cameras.items()]

    def _lease_keeper(self, camera: str, holder: str | None, ttl_s: float) -> LeaseKeeper | None:
        if self.leases is None or self.fences is None or holder is None:
            return None
        return LeaseKeeper(self.leases, self.fences, camera, holder, ttl_s)

    def _recover_camera(self, camera: str) -> None:
        """Vault recovery of one camera, run by its worker once it holds the lease (see ``__init__``)."""
        if self.vault is None:
            return
        from trustcam.storage.recovery import recover

        try:
            report = recover(self.vault, cameras=[camera])
        except Exception:  # recording goes on: a leftover file is retried at the next start, never lost evidence
            log.exception("vault recovery of camera %s failed; recording anyway", camera)
            return
        log.log(logging.INFO if report.ok else logging.WARNING, "vault recovery of camera %s: %s", camera,
                report.summary())

    def start(self) -> None:
        self.shred_expired_faces()
        if self.deliver_alerts:
            self.alerts.start()
        if self.retention is not None:
            self.retention.start()
        for worker in self.workers:
            worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        for worker in self.workers:
            worker.stop()
        for worker in self.workers:
            worker.join(timeout)
        for worker in self.workers:  # a worker that is stuck still gets its footage stored
            if worker.recorder is not None:
                worker.recorder.close()
        if self.detectors is not None:
            self.detectors.close()  # the detector service, once every camera has stopped calling it
        if self.retention is not None:
            self.retention.stop()
        self.store.close(timeout=3.0)  # events still buffered (database down): stored now, or logged as not stored
        self.alerts.stop()  # after the cameras: their last alerts are queued; undelivered ones wait in the outbox
        if self._access is not None:
            self._access.close()  # stop the audit timer and sign the head

    def access_control(self) -> AccessControl:
        """The web layer's AccessControl, made on first use (only a served web UI writes audit entries): its audit
        checkpoints go to this service's witness (MQTT included) and are signed on a timer until ``stop``."""
        with self._access_lock:
            if self._access is None:
                from trustcam.security.access import AccessControl

                self._access = AccessControl(self.settings, self.engine, witness=self.witness)
                self._access.start()
            return self._access

    def check_health(self) -> None:
        """Publish camera health alerts (offline, stalled, low fps, reconnect storm); call about once a second."""
        now = time.time()
        for worker in self.workers:
            for health_event in worker.health.check(worker.stream.stats, now):
                self.bus.publish(health_event)
        if self._faces_shredded_at is not None and now - self._faces_shredded_at >= FACE_SHRED_EVERY_S:
            self.shred_expired_faces()

    def shred_expired_faces(self) -> int:
        """Crypto-shred expired face enrolments (at start, then hourly from :meth:`check_health`), audit-logged like
        ``trustcam faces shred-expired``; a failure is logged and retried at the next hour, never fatal."""
        if self.face_models is None:
            return 0
        self._faces_shredded_at = time.time()
        try:
            erased = self.face_models.store.shred_expired()
            for erasure in erased:
                log.info("face enrolment '%s' expired: %d template(s) shredded", erasure.name, erasure.templates)
                self.access_control().record("faces.expire", username="trustcam", client="service",
                                             target=erasure.name, templates=erasure.templates,
                                             events_relabelled=erasure.events_relabelled)
        except Exception:
            log.exception("shredding expired face enrolments failed; retrying in %g s", FACE_SHRED_EVERY_S)
            return 0
        return len(erased)

    def status_lines(self) -> list[str]:
        """One line per camera: stream health and analysis counters."""
        lines = []
        for worker in self.workers:
            s, p = worker.stream.stats, worker.pipeline.stats
            if s.connected:
                state = "connected"
            elif s.last_error is None:
                state = "stopped" if s.connects else "not yet connected"
            else:
                state = f"disconnected ({s.last_error})"
            line = (f"{worker.camera_name}: {state}; {s.fps:.1f} fps, {s.frames} frames, {s.reconnects} "
                    f"reconnects, {s.stalls} stalls; detector on {p.detect_fraction:.0%} of frames, "
                    f"{p.scene_changes} scene changes")
            if worker.recorder is not None:
                r = worker.recorder.stats
                line += (f"; recording {worker.recorder.config.mode}: {r.stored} segments stored "
                         f"({r.bytes_stored / 1e6:.1f} MB), {r.dropped} not kept, {r.failed} failed")
            if worker.lease is not None:
                held = worker.lease.lease
                line += ("; lease lost" if worker.lease_lost else f"; lease token {held.token}" if held is not None
                         else "; standby (waiting for the lease)")
            lines.append(line)
        return lines
