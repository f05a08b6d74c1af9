"""Detector failover: a hung or crashed detector is replaced by another backend within a second.

A detector that runs in the camera's own process can take the whole process down (a native crash) or hang
it forever, and then the cameras are silently blind. :class:`ProcessDetector` runs one catalog model in a
child process behind a per-call deadline, so a crash or a hang becomes a :class:`DetectorFailure` that the
caller sees in time. :class:`FailoverDetector` turns that failure into a switch to the next healthy backend
(the same frame is retried there, so it is not lost), reports every change of AI coverage as a
:class:`CoverageChange` (for the timeline and a high-priority alert) and restarts the failed detector in the
background, switching back when a preferred one is healthy again.

What a camera does while coverage is degraded or blind is the caller's policy, not this module's:
*fail-open* treats motion as an alert while no detector can look at it (nothing is missed, more false
alarms); *fail-closed* raises no detection alerts until AI coverage returns (no false alarms, events may be
missed, which the "blind" alert makes visible).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import multiprocessing as mp
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from trustcam.vision.detections import Detections

log = logging.getLogger(__name__)

CoverageState = Literal["degraded", "blind", "restored"]


class DetectorFailure(RuntimeError):
    """A detector did not answer in time, or its process died; ``reason`` says which, for the timeline."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AIBlind(DetectorFailure):
    """Every detector has failed: no AI looks at the cameras until one is restored."""


@dataclass(frozen=True)
class CoverageChange:
    """A change of AI coverage: ``time`` is wall-clock seconds (``time.time()``) so it goes on a timeline."""

    time: float
    state: CoverageState
    active: str | None
    failed: str
    reason: str


class DetectorLike(Protocol):
    """What :class:`~trustcam.vision.frame_detector.FrameDetector` and the pipeline use of a detector."""

    name: str
    sha256: str
    input_size: int
    nms_iou: float
    score_threshold: float
    calls: int

    def detect(self, image: np.ndarray, score_threshold: float | None = None) -> Detections: ...


# ---------------------------------------------------------------------------------------------- child side


def load_in_child(conn: Connection, name: str, threads: int, score_threshold: float) -> Any:
    """Child process start: ignore stop signals, load ``name`` and report "ready" (with the model's attributes)
    or "error"; returns the detector, or None when loading failed (the child then ends)."""
    # Ctrl-C in a terminal and `systemctl stop` signal the whole process group: stopping is the parent's job
    # (it closes the pipe, and the serving loop ends on EOF), or a clean stop would look like a detector crash
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        from trustcam.vision.detectors.onnx_models import load_detector

        detector = load_detector(name, threads=threads, score_threshold=score_threshold)
    except BaseException as e:  # anything that stops loading is reported, not raised
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return None
    conn.send(
        (
            "ready",
            {
                "name": detector.name,
                "sha256": detector.sha256,
                "input_size": detector.input_size,
                "nms_iou": detector.nms_iou,
                "spec": detector.spec,
            },
        )
    )
    return detector


class SharedImages:
    """Child side of :class:`SharedImage`: one read-only mapping per sender, remapped when its buffer moves."""

    def __init__(self) -> None:
        self._maps: dict[object, tuple[str, mmap.mmap]] = {}

    def image(self, sender: object, path: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        held = self._maps.get(sender)
        if held is None or held[0] != path:
            self.forget(sender)
            with open(path, "rb") as f:
                held = (path, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
            self._maps[sender] = held
        return np.ndarray(shape, np.dtype(dtype), buffer=held[1])

    def forget(self, sender: object) -> None:
        held = self._maps.pop(sender, None)
        if held is not None:
            held[1].close()


def _serve(conn: Connection, name: str, threads: int, score_threshold: float) -> None:
    """Child process main: load ``name``, then answer detect requests until told to stop or the pipe closes.

    Images arrive through a file-backed shared buffer (only shape and dtype go over the pipe), so a request
    is a few bytes and sending it can never block on a stopped child.
    """
    detector = load_in_child(conn, name, threads, score_threshold)
    if detector is None:
        return
    images = SharedImages()
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        path, shape, dtype, threshold = request
        try:
            conn.send(("ok", detector.detect(images.image(0, path, shape, dtype), threshold)))
        except Exception as e:  # a bad request is answered, the child keeps serving
            conn.send(("error", f"{type(e).__name__}: {e}"))


# --------------------------------------------------------------------------------------------- parent side


def _exit_reason(process: mp.process.BaseProcess) -> str:
    """Say how a child ended, naming the signal when one killed it (the timeline shows this)."""
    code = process.exitcode
    if code is None:
        return "detector process is not answering"
    if code < 0:
        try:
            return f"detector process crashed (killed by {signal.Signals(-code).name})"
        except ValueError:
            return f"detector process crashed (signal {-code})"
    return f"detector process exited with code {code}"


def spawn_model_process(
    ctx: Any, target: Callable[..., None], args: tuple[Any, ...], name: str, start_timeout_s: float
) -> tuple[mp.process.BaseProcess, Connection, dict[str, Any]]:
    """Start ``target(child_conn, *args)`` in a daemon child and wait for its "ready" (the model's attributes);
    raise :class:`DetectorFailure` naming why when it does not load in time, dies or reports an error."""
    parent, child = ctx.Pipe(duplex=True)
    process = ctx.Process(target=target, args=(child, *args), name=f"detector-{name}", daemon=True)
    process.start()
    child.close()
    if not parent.poll(start_timeout_s):
        process.kill()
        process.join(1.0)
        parent.close()
        raise DetectorFailure(f"{name}: detector process did not start within {start_timeout_s:g}s")
    try:
        kind, payload = parent.recv()
    except EOFError:
        process.join(1.0)
        parent.close()
        raise DetectorFailure(f"{name}: {_exit_reason(process)} while loading") from None
    if kind != "ready":
        process.join(1.0)
        parent.close()
        raise DetectorFailure(f"{name}: could not load the model: {payload}")
    return process, parent, payload


class SharedImage:
    """A file-backed buffer in /dev/shm that a child maps: a frame is copied once, never pickled through a pipe."""

    def __init__(self) -> None:
        self._buffer: mmap.mmap | None = None
        self.path: str | None = None

    def share(self, image: np.ndarray) -> str:
        """Copy ``image`` into the buffer (grown as needed: a new file, so a child sees the new path) and return
        the buffer's path."""
        size = max(image.nbytes, 1)
        if self._buffer is None or len(self._buffer) < size:
            self.close()
            folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
            fd, path = tempfile.mkstemp(prefix="trustcam-det-", dir=folder)
            try:
                os.ftruncate(fd, size)
                self._buffer = mmap.mmap(fd, size)
            finally:
                os.close(fd)
            self.path = path
        np.ndarray(image.shape, image.dtype, buffer=self._buffer)[...] = image
        return self.path  # type: ignore[return-value]

    def close(self) -> None:
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None
        if self.path is not None:
            Path(self.path).unlink(missing_ok=True)
            self.path = None


class ProcessDetector:
    """One catalog model in a child process, with a deadline on every call.

    A call that is not answered within ``deadline_s`` (a hang) or whose child has died (a crash) raises
    :class:`DetectorFailure`; a hung child is killed at once so it can never answer late. :meth:`restart`
    starts a fresh child. The attributes match :class:`~trustcam.vision.detectors.base.Detector`.
    """

    def __init__(
        self,
        name: str,
        *,
        threads: int = 1,
        score_threshold: float = 0.3,
        deadline_s: float = 1.0,
        start_timeout_s: float = 60.0,
        context: str = "spawn",
    ) -> None:
        self.name = name
        self.threads = threads
        self.score_threshold = score_threshold
        self.deadline_s = deadline_s
        self.start_timeout_s = start_timeout_s
        self.calls = 0
        self.sha256 = ""
        self.input_size = 0
        self.nms_iou = 0.45
        self.spec: Any = None
        self._ctx = mp.get_context(context)
        self._lock = threading.Lock()
        self._process: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._image = SharedImage()
        self._start()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def _start(self) -> None:
        process, conn, payload = spawn_model_process(
            self._ctx, _serve, (self.name, self.threads, self.score_threshold), self.name, self.start_timeout_s
        )
        self.sha256 = payload["sha256"]
        self.input_size = payload["input_size"]
        self.nms_iou = payload["nms_iou"]
        self.spec = payload["spec"]
        self._process, self._conn = process, conn

    def _stop_child(self) -> None:
        """Kill the child (SIGKILL works on a stopped one too) and reap it."""
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(2.0)
        if self._conn is not None:
            self._conn.close()
        self._process, self._conn = None, None

    def restart(self) -> None:
        """Replace the child with a fresh one (raises :class:`DetectorFailure` if it cannot load)."""
        with self._lock:
            self._stop_child()
            self._start()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self.alive():
                try:
                    self._conn.send(None)
                    self._process.join(1.0)  # type: ignore[union-attr]
                except OSError:
                    pass
            self._stop_child()
            self._image.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    def detect(self, image: np.ndarray, score_threshold: float | None = None) -> Detections:
        """Detect in the child; raise :class:`DetectorFailure` on a crash or after ``deadline_s``."""
        threshold = self.score_threshold if score_threshold is None else score_threshold
        with self._lock:
            start = time.monotonic()
            if self._conn is None or self._process is None:
                raise DetectorFailure(f"{self.name}: detector process is not running")
            if not self._process.is_alive():
                reason = _exit_reason(self._process)
                self._stop_child()
                raise DetectorFailure(f"{self.name}: {reason}")
            image = np.ascontiguousarray(image)
            path = self._image.share(image)
            try:
                self._conn.send((path, image.shape, image.dtype.str, threshold))
                remaining = self.deadline_s - (time.monotonic() - start)
                if not self._conn.poll(max(remaining, 0.0)):
                    self._stop_child()
                    raise DetectorFailure(f"{self.name}: detector hung (no answer within {self.deadline_s:g}s)")
                kind, payload = self._conn.recv()
            except (EOFError, OSError):
                self._process.join(0.5)
                reason = _exit_reason(self._process)
                self._stop_child()
                raise DetectorFailure(f"{self.name}: {reason}") from None
        if kind != "ok":
            raise DetectorFailure(f"{self.name}: detect failed in the child: {payload}")
        self.calls += 1
        return payload


# ------------------------------------------------------------------------------------------------ failover


class FailoverDetector:
    """Detector-compatible front for a preferred detector and ordered backups.

    The attributes (``name``, ``sha256``, ``input_size``, ``nms_iou``, ``calls``, ``spec``) follow the detector
    in use, so events record the model that actually saw them. Only :class:`DetectorFailure` triggers a
    switch: any other exception is a bug or a bad input that every backend would share, and is raised.
    """

    def __init__(
        self,
        primary: DetectorLike,
        backups: Sequence[DetectorLike],
        *,
        on_change: Callable[[CoverageChange], None] | None = None,
        restart_backoff_s: float = 1.0,
        restart_backoff_cap_s: float = 30.0,
    ) -> None:
        self.detectors: list[DetectorLike] = [primary, *backups]
        self.on_change = on_change
        self.restart_backoff_s = restart_backoff_s
        self.restart_backoff_cap_s = restart_backoff_cap_s
        self._active: int | None = 0
        self._failed: set[int] = set()
        self._restarting: set[int] = set()
        self._lock = threading.RLock()
        self._closed = threading.Event()

    # ---- the Detector attributes, following the active detector
    @property
    def active(self) -> DetectorLike | None:
        with self._lock:
            return None if self._active is None else self.detectors[self._active]

    def _current(self) -> DetectorLike:
        """The active detector, or the primary while blind (attributes stay readable)."""
        return self.active or self.detectors[0]

    @property
    def state(self) -> Literal["ok", "degraded", "blind"]:
        with self._lock:
            if self._active is None:
                return "blind"
            return "ok" if self._active == 0 else "degraded"

    @property
    def name(self) -> str:
        return self._current().name

    @property
    def sha256(self) -> str:
        return self._current().sha256

    @property
    def input_size(self) -> int:
        return self._current().input_size

    @property
    def nms_iou(self) -> float:
        return self._current().nms_iou

    @property
    def calls(self) -> int:
        return self._current().calls

    @property
    def spec(self) -> Any:
        return getattr(self._current(), "spec", None)

    @property
    def score_threshold(self) -> float:
        return self._current().score_threshold

    @score_threshold.setter
    def score_threshold(self, value: float) -> None:
        for d in self.detectors:
            d.score_threshold = value

    # ---- detection
    def detect(self, image: np.ndarray, score_threshold: float | None = None) -> Detections:
        """Detect with the active detector; on failure switch and retry the same image on the next one."""
        while True:
            with self._lock:
                index = self._active
            if index is None:
                raise AIBlind("no detector is available")
            try:
                return self.detectors[index].detect(image, score_threshold)
            except DetectorFailure as e:
                self._on_failure(index, e.reason)

    def detect_many(self, images: Sequence[np.ndarray], score_threshold: float | None = None) -> list[Detections]:
        """:meth:`detect` for several images at once: one batch on a detector that takes them together (the shared
        service), else one call each; on failure the next detector retries them all."""
        while True:
            with self._lock:
                index = self._active
            if index is None:
                raise AIBlind("no detector is available")
            detector = self.detectors[index]
            many = getattr(detector, "detect_many", None)
            try:
                if many is not None:
                    return many(images, score_threshold)  # type: ignore[no-any-return]
                return [detector.detect(image, score_threshold) for image in images]
            except DetectorFailure as e:
                self._on_failure(index, e.reason)

    def _emit(self, change: CoverageChange) -> None:
        log.warning(
            "AI coverage %s: active=%s failed=%s (%s)", change.state, change.active, change.failed, change.reason
        )
        if self.on_change is not None:
            try:
                self.on_change(change)
            except Exception:
                log.exception("coverage change handler failed")

    def _on_failure(self, index: int, reason: str) -> None:
        with self._lock:
            if index in self._failed:
                return  # another thread already handled this one
            self._failed.add(index)
            healthy = [i for i in range(len(self.detectors)) if i not in self._failed]
            if self._active == index or self._active is None:
                self._active = healthy[0] if healthy else None
            active = self._active
        failed = self.detectors[index].name
        if active is None:
            self._emit(CoverageChange(time.time(), "blind", None, failed, reason))
        else:
            self._emit(CoverageChange(time.time(), "degraded", self.detectors[active].name, failed, reason))
        self._restart_later(index)

    def _restart_later(self, index: int) -> None:
        detector = self.detectors[index]
        restart = getattr(detector, "restart", None)
        if restart is None or self._closed.is_set():
            return
        with self._lock:
            if index in self._restarting:
                return
            self._restarting.add(index)
        threading.Thread(
            target=self._restart_loop, args=(index, restart), name=f"restart-{detector.name}", daemon=True
        ).start()

    def _restart_loop(self, index: int, restart: Callable[[], None]) -> None:
        """Restart the failed detector with backoff until it loads, then take it back if it is preferred."""
        delay = self.restart_backoff_s
        try:
            while not self._closed.is_set():
                try:
                    restart()
                    break
                except Exception as e:  # keep trying; the failure is logged
                    log.warning("restarting %s failed: %s", self.detectors[index].name, e)
                    if self._closed.wait(delay):
                        return
                    delay = min(delay * 2, self.restart_backoff_cap_s)
            else:
                return
            with self._lock:
                self._failed.discard(index)
                switch = self._active is None or index < self._active
                if switch:
                    self._active = index
                degraded = self._active != 0
            if switch:
                name = self.detectors[index].name
                reason = "detector restarted" + (" (still degraded)" if degraded else "")
                self._emit(CoverageChange(time.time(), "restored", name, name, reason))
        finally:
            with self._lock:
                self._restarting.discard(index)

    def close(self) -> None:
        """Stop background restarts and close detectors that own processes."""
        self._closed.set()
        for d in self.detectors:
            close = getattr(d, "close", None)
            if close is not None:
                close()
