"""Wiring: turn a config into running camera pipelines, for a file (``analyze``) or live (``run``).

Each camera has a reader thread (decoding releases the GIL, so it overlaps with detection) feeding its
pipeline through a small queue. Live cameras drop the oldest frame when analysis falls behind rather
than drifting further and further from real time; files never drop.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from trustcam.bus import Bus
from trustcam.config.schema import CameraConfig, Settings
from trustcam.events.model import EventEnded
from trustcam.ingest.frame import Frame
from trustcam.ingest.source import DecodeReport, SourceError, VideoSource, source_kind
from trustcam.ingest.stream import LiveStream
from trustcam.pipeline import CameraPipeline
from trustcam.storage.database import open_database
from trustcam.storage.event_store import EventStore
from trustcam.vision.detectors.base import Detector
from trustcam.vision.detectors.onnx_models import load_detector

log = logging.getLogger(__name__)
_END = object()


def build_detector(settings: Settings) -> Detector:
    cfg = settings.detector
    return load_detector(cfg.model, threads=cfg.threads, score_threshold=cfg.score_threshold)


def detect_size(camera: CameraConfig) -> tuple[int, int] | None:
    d = camera.detect
    return (d.width, d.height) if d.width and d.height else None


def _threaded(frames: Iterator[Frame], maxsize: int, drop_oldest: bool, stop: threading.Event,
              errors: list[BaseException]) -> Iterator[Frame]:
    """Decode in a background thread; yield frames here. Reader exceptions are re-raised to the consumer."""
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
                 snapshot_dir: Path | None, name: str = "file") -> AnalyzeResult:
    """Run the pipeline over a whole file as fast as possible; damage stops decoding, not the analysis
    of what came before it."""
    source = VideoSource(path, fps=camera.detect.fps, size=detect_size(camera), timeout_s=camera.timeout_s)
    pipeline = CameraPipeline(name, camera, settings, detector, bus, snapshot_dir)
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


class CameraWorker(threading.Thread):
    """Runs one live camera until stopped; never exits on camera errors (the stream reconnects)."""

    def __init__(self, name: str, camera: CameraConfig, settings: Settings, bus: Bus, snapshot_dir: Path) -> None:
        super().__init__(name=f"camera-{name}", daemon=True)
        self.camera_name = name
        self.stream = LiveStream(camera.source, fps=camera.detect.fps, size=detect_size(camera),
                                 timeout_s=camera.timeout_s, rtsp_transport=camera.rtsp_transport)
        self.pipeline = CameraPipeline(name, camera, settings, build_detector(settings), bus, snapshot_dir)
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.stream.stop()

    def run(self) -> None:
        frames = self.stream.frames()
        if source_kind(self.stream.url) == "file":
            frames = paced(frames, self._stop_event)
        try:
            for frame in _threaded(frames, 2, True, self._stop_event, []):
                self.pipeline.process(frame)
        except Exception:
            log.exception("camera %s: pipeline failed", self.camera_name)
        finally:
            self.pipeline.close()


class Service:
    """All enabled cameras of a config, the event store and the bus."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bus = Bus()
        self.store = EventStore(open_database(settings.resolved_database_url))
        self.store.attach(self.bus)
        self.bus.subscribe(EventEnded, lambda m: log.info("event %s: %s on %s (%.2f)", m.event.id,
                                                          m.event.label, m.event.camera, m.event.best_score))
        snapshots = settings.data_dir / "snapshots"
        self.workers = [CameraWorker(name, cam, settings, self.bus, snapshots)
                        for name, cam in settings.cameras.items() if cam.enabled]

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        for worker in self.workers:
            worker.stop()
        for worker in self.workers:
            worker.join(timeout)

    def status_lines(self) -> list[str]:
        """One line per camera: stream health and analysis counters."""
        lines = []
        for worker in self.workers:
            s, p = worker.stream.stats, worker.pipeline.stats
            state = "connected" if s.connected else f"disconnected ({s.last_error or 'not yet connected'})"
            lines.append(f"{worker.camera_name}: {state}; {s.fps:.1f} fps, {s.frames} frames, {s.reconnects} "
                         f"reconnects, {s.stalls} stalls; detector on {p.detect_fraction:.0%} of frames, "
                         f"{p.scene_changes} scene changes")
        return lines
