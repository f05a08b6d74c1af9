"""One detector service per node: every camera's detector calls go to one model process, gathered into batches.

A detector process per camera costs a Python interpreter, ONNX Runtime and a copy of the model for each camera
(~230 MiB RSS per 1080p camera with the backup model), and the cameras' calls never share a model call.
:class:`DetectorService` runs the primary model once per node in a child process; each camera talks to it
through its own :class:`ServiceClient`, which behaves like a
:class:`~trustcam.vision.detectors.failover.ProcessDetector` (same attributes, same per-call deadline, same
:class:`~trustcam.vision.detectors.failover.DetectorFailure` reasons), so each camera keeps its own
:class:`~trustcam.vision.detectors.failover.FailoverDetector`, coverage alerts and canary unchanged.

Requests from camera threads queue up; a dispatcher thread takes whatever is pending (waiting ``gather_s`` for
more, up to ``max_batch``) and sends it as one message. The child answers the whole batch with
:meth:`~trustcam.vision.detectors.base.Detector.detect_batch`: one NCHW model call when the model's batch
dimension is dynamic, else one call per image in the child (the bundled models are exported with batch 1).
Images travel through each client's shared-memory buffer, never through the pipe.

The child is judged by its own progress, not by one caller's wait: a caller whose deadline passes keeps waiting
while the child answers batches (its request was queued behind other cameras' on a busy node: failing over would put
the backup model's calls on the same busy cores and make every camera slower, so it waits and counts as ``late``).
Once the batch in the child has gone unanswered for a whole deadline, the child is hung: the caller kills it, so it
can never answer late, and every other pending caller fails at once with the same reason and fails over. A request
still queued after ``overload_after_s`` fails as overloaded (a node far beyond its capacity). A crash fails them all
at once too. The next :meth:`ServiceClient.restart` (the failover's restart loop, with its
backoff) starts a fresh child; the first camera to ask restarts it, the others find it running.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing as mp
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Literal

import numpy as np

from trustcam.vision.detections import Detections
from trustcam.vision.detectors.failover import (
    CoverageChange,
    DetectorFailure,
    DetectorLike,
    FailoverDetector,
    SharedImage,
    SharedImages,
    _exit_reason,
    load_in_child,
    spawn_model_process,
)

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------- child side


def _serve_batches(conn: Connection, name: str, threads: int, score_threshold: float, workers: int) -> None:
    """Child process main: load ``name``, then answer batches until told to stop or the pipe closes.

    A batch is ``(items, forget)``: items are ``(client, path, shape, dtype, threshold)``; forget lists clients
    that closed (their mappings are dropped). The answer is one ``("ok", Detections)`` or ``("error", message)``
    per item, in order: a bad image fails its own caller, not the batch. With ``workers`` > 1 a batch the model
    cannot take in one call is spread over that many threads (ONNX Runtime runs sessions without the GIL), so one
    service uses as many cores as a process per camera did.
    """
    detector = load_in_child(conn, name, threads, score_threshold)
    if detector is None:
        return
    images = SharedImages()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="detect") if workers > 1 else None
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        items, forget = request
        for client in forget:
            images.forget(client)
        conn.send(_answer(detector, images, items, pool))


def _answer(detector: Any, images: SharedImages, items: list[tuple[Any, ...]],
            pool: ThreadPoolExecutor | None) -> list[tuple[str, Any]]:
    """Detect every item: one model call when the model batches, else one call per item (on ``pool`` when
    given). Each failure is reported against its own item only."""
    mapped: list[np.ndarray | str] = []
    for client, path, shape, dtype, _ in items:
        try:
            mapped.append(images.image(client, path, shape, dtype))
        except Exception as e:
            mapped.append(f"{type(e).__name__}: {e}")
    thresholds = [item[4] for item in items]
    if len(items) > 1 and detector.batchable and all(isinstance(m, np.ndarray) for m in mapped):
        with contextlib.suppress(Exception):  # retried one by one below, so the culprit gets the error
            return [("ok", d) for d in detector.detect_batch(mapped, thresholds)]

    def one(image: np.ndarray | str, threshold: float) -> tuple[str, Any]:
        if isinstance(image, str):
            return ("error", image)
        try:
            return ("ok", detector.detect(image, threshold))
        except Exception as e:
            return ("error", f"{type(e).__name__}: {e}")

    if pool is not None and len(items) > 1:
        return list(pool.map(one, mapped, thresholds))
    return [one(image, threshold) for image, threshold in zip(mapped, thresholds, strict=True)]


# --------------------------------------------------------------------------------------------- parent side


@dataclass(eq=False)
class _Request:
    """One caller's detect call, from queued to answered (or failed)."""

    client: int
    path: str
    shape: tuple[int, ...]
    dtype: str
    threshold: float
    overload_s: float = 10.0  # how long it may stay queued while the child answers others
    queued_at: float = field(default_factory=time.monotonic)
    late: bool = False  # its caller's deadline passed while the service was busy with other requests
    generation: int = 0
    state: Literal["queued", "sent", "done"] = "queued"
    result: Detections | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def finish(self, result: Detections | None, error: str | None) -> None:
        self.result, self.error, self.state = result, error, "done"
        self.done.set()


@dataclass
class BatchStats:
    """How well requests were gathered: ``requests / batches`` is the mean batch size."""

    batches: int = 0
    requests: int = 0
    largest: int = 0
    restarts: int = 0
    late: int = 0  # requests answered after their caller's deadline: queued behind other cameras on a busy node
    overloaded: int = 0  # requests that failed still queued after ``overload_after_s``


class DetectorService:
    """The primary model in one child process, shared by every camera of the node through :meth:`client`.

    ``max_batch`` caps the requests sent together; ``gather_s`` is how long the dispatcher waits for more once a
    request is pending and fewer than ``max_batch`` are (a few ms: the latency every call may pay for batching);
    ``workers`` is how many threads the child spreads a batch over when the model cannot batch (cores to use);
    ``overload_after_s`` is how long a request may stay queued behind others while the child makes progress
    (default: ten times the caller's deadline).
    """

    RETRY_AFTER_S = 0.5  # a failed start is reported to other cameras asking within this time, not retried

    def __init__(
        self,
        name: str,
        *,
        threads: int = 1,
        score_threshold: float = 0.3,
        max_batch: int = 8,
        gather_s: float = 0.002,
        workers: int = 1,
        overload_after_s: float | None = None,
        start_timeout_s: float = 60.0,
        context: str = "spawn",
    ) -> None:
        if max_batch < 1 or workers < 1:
            raise ValueError(f"max_batch and workers must be at least 1, not {max_batch} and {workers}")
        self.name = name
        self.threads = threads
        self.score_threshold = score_threshold
        self.max_batch = max_batch
        self.gather_s = gather_s
        self.workers = workers
        self.overload_after_s = overload_after_s
        self.start_timeout_s = start_timeout_s
        self.sha256 = ""
        self.input_size = 0
        self.nms_iou = 0.45
        self.spec: Any = None
        self.stats = BatchStats()
        self.generation = 0  # +1 per child started: a request belongs to the child it was queued for
        self._ctx = mp.get_context(context)
        self._cond = threading.Condition()
        self._restart_lock = threading.Lock()  # one restart at a time; the others then find the child running
        self._queue: deque[_Request] = deque()
        self._sent: list[_Request] = []
        self._sent_at = 0.0  # when the batch in the child was sent: its progress is judged from then
        self._forget: list[int] = []
        self._broken: str | None = "detector service is not started"  # why the child cannot serve; None = serving
        self._closed = False
        self._process: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._dispatcher: threading.Thread | None = None
        self._client_ids = itertools.count(1)
        self._failed_start: tuple[float, DetectorFailure] | None = None
        self._start()

    # ---- lifecycle
    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None else None

    def alive(self) -> bool:
        with self._cond:
            return self._broken is None and self._process is not None and self._process.is_alive()

    def _start(self) -> None:
        process, conn, payload = spawn_model_process(
            self._ctx, _serve_batches, (self.name, self.threads, self.score_threshold, self.workers), self.name,
            self.start_timeout_s,
        )
        self.sha256 = payload["sha256"]
        self.input_size = payload["input_size"]
        self.nms_iou = payload["nms_iou"]
        self.spec = payload["spec"]
        with self._cond:
            self.generation += 1
            self._process, self._conn, self._broken = process, conn, None
            self._dispatcher = threading.Thread(
                target=self._dispatch, args=(process, conn, self.generation), name=f"detector-service-{self.name}",
                daemon=True,
            )
        self._dispatcher.start()

    def _stop_child(self, reason: str) -> None:
        """Fail whatever is pending, kill the child (SIGKILL works on a stopped one too) and reap it."""
        with self._cond:
            if self._broken is None:
                self._broken = reason
            self._fail_pending(self._broken)
            process, conn, dispatcher = self._process, self._conn, self._dispatcher
            self._cond.notify_all()
        if process is not None and process.is_alive():
            process.kill()
        if dispatcher is not None and dispatcher is not threading.current_thread():
            dispatcher.join(5.0)
        if process is not None:
            process.join(2.0)
        if conn is not None:
            conn.close()
        with self._cond:
            if self._process is process:
                self._process, self._conn, self._dispatcher = None, None, None

    def ensure_running(self) -> None:
        """Start a fresh child unless the current one is serving (raises :class:`DetectorFailure` if it cannot
        load). Every camera's failover calls this after a failure; the first restarts, the rest find it running."""
        with self._restart_lock:
            if self._closed:
                raise DetectorFailure(f"{self.name}: detector service is closed")
            if self.alive():
                return
            failed = self._failed_start
            if failed is not None and time.monotonic() - failed[0] < self.RETRY_AFTER_S:
                raise failed[1]  # every camera asks at once after a failure: one load attempt answers them all
            self._stop_child("detector process is being restarted")
            try:
                self._start()
            except DetectorFailure as e:
                self._failed_start = (time.monotonic(), e)
                raise
            self._failed_start = None
            self.stats.restarts += 1
            log.info("detector service %s restarted (pid %s)", self.name, self.pid)

    def close(self) -> None:
        """Stop the child (asked first, then killed) and fail any pending call."""
        with self._restart_lock:
            self._closed = True
            with self._cond:
                if self._broken is None:
                    self._broken = "detector service closed"
                self._fail_pending(self._broken)
                self._cond.notify_all()
                process, conn, dispatcher = self._process, self._conn, self._dispatcher
            if dispatcher is not None:
                dispatcher.join(2.0)
            if process is not None and conn is not None and process.is_alive() and not (dispatcher and
                                                                                        dispatcher.is_alive()):
                with contextlib.suppress(OSError):
                    conn.send(None)
                process.join(1.0)
            self._stop_child("detector service closed")

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    # ---- requests
    def client(self, deadline_s: float = 1.0) -> ServiceClient:
        """A per-camera detector that uses this service, with its own deadline, threshold and call count."""
        return ServiceClient(self, deadline_s=deadline_s)

    def _new_client_id(self) -> int:
        return next(self._client_ids)

    def forget(self, client: int) -> None:
        """A client closed: the child drops its image mapping with the next batch."""
        with self._cond:
            self._forget.append(client)

    def submit(self, *requests: _Request) -> None:
        """Queue ``requests`` together, so the dispatcher can send them as one batch (raises
        :class:`DetectorFailure` at once when the child is down)."""
        with self._cond:
            if self._broken is None and self._process is not None and not self._process.is_alive():
                self._broken = _exit_reason(self._process)  # died while idle: no batch noticed it yet
                self._fail_pending(self._broken)
            if self._broken is not None:
                raise DetectorFailure(f"{self.name}: {self._broken}")
            for request in requests:
                request.generation = self.generation
                self._queue.append(request)
            self._cond.notify_all()

    def overdue(self, request: _Request, deadline_s: float) -> tuple[str | None, float]:
        """The caller's deadline passed: ``(reason, 0)`` when the request has failed, ``(None, seconds)`` to wait
        that much longer, ``(None, 0)`` when it was answered meanwhile.

        The child is hung only when the batch it holds has gone unanswered for ``deadline_s``: then it is killed so
        it can never answer late, and every pending caller fails over now. While it answers, a queued caller waits
        (counted ``late``) up to ``overload_after_s``, then fails as overloaded."""
        now = time.monotonic()
        with self._cond:
            if request.state == "done":
                return None, 0.0
            if request.generation != self.generation or self._broken is not None:
                reason = self._broken or "detector process was restarted"
                request.finish(None, reason)
                return reason, 0.0
            if not request.late:
                request.late = True
                self.stats.late += 1
            stalled = now - self._sent_at if self._sent else 0.0
            if stalled < deadline_s:
                queued, waited = request.state == "queued", now - request.queued_at
                if not queued or waited < request.overload_s:
                    left = deadline_s - stalled  # until the batch in the child could count as hung
                    if queued:
                        left = min(left, request.overload_s - waited)
                    return None, max(left, 0.005)
                self._queue.remove(request)
                self.stats.overloaded += 1
                reason = f"detector service overloaded (request still queued after {waited:.1f}s)"
                request.finish(None, reason)
                return reason, 0.0
            reason = f"detector hung (no answer within {deadline_s:g}s)"
            process = self._process
            self._broken = reason
            self._fail_pending(reason)  # the other callers fail over now, not at their own deadline
            self._cond.notify_all()
        if process is not None and process.is_alive():
            process.kill()
        return reason, 0.0

    def _fail_pending(self, reason: str) -> None:
        """Fail every queued and sent request (caller holds ``_cond``)."""
        for request in [*self._sent, *self._queue]:
            if request.state != "done":
                request.finish(None, reason)
        self._sent.clear()
        self._queue.clear()

    def _gather(self, generation: int) -> tuple[list[_Request], list[int]] | None:
        """Wait for pending requests, then up to ``gather_s`` for a fuller batch (caller holds ``_cond``);
        None once this child should stop serving."""
        while not self._queue and self._broken is None and self.generation == generation:
            self._cond.wait()
        if self._broken is not None or self.generation != generation:
            return None
        end = time.monotonic() + self.gather_s
        while len(self._queue) < self.max_batch and self._broken is None:
            left = end - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)
        if self._broken is not None or not self._queue:
            return None if self._broken is not None else ([], [])
        batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
        for request in batch:
            request.state = "sent"
        self._sent, self._sent_at = batch, time.monotonic()
        forget, self._forget = self._forget, []
        return batch, forget

    def _dispatch(self, process: mp.process.BaseProcess, conn: Connection, generation: int) -> None:
        """Dispatcher thread for one child: batches out, answers back to their callers, until the child dies."""
        while True:
            with self._cond:
                gathered = self._gather(generation)
            if gathered is None:
                return
            batch, forget = gathered
            if not batch:
                continue
            try:
                conn.send(([(r.client, r.path, r.shape, r.dtype, r.threshold) for r in batch], forget))
                answers = conn.recv()
            except (EOFError, OSError):
                answers = None
            if answers is None:
                process.join(0.5)
            with self._cond:
                if answers is None or len(answers) != len(batch):
                    if self._broken is None and self.generation == generation:
                        self._broken = _exit_reason(process) if answers is None else "detector answered badly"
                    self._fail_pending(self._broken or "detector process stopped")
                    return
                for request, (kind, payload) in zip(batch, answers, strict=True):
                    if request.state != "done":
                        ok = kind == "ok"
                        request.finish(payload if ok else None, None if ok else f"detect failed in the child: "
                                                                                f"{payload}")
                self._sent = []
                self.stats.batches += 1
                self.stats.requests += len(batch)
                self.stats.largest = max(self.stats.largest, len(batch))


class ServiceClient:
    """One camera's detector on a shared :class:`DetectorService`: the attributes and failures of a
    :class:`~trustcam.vision.detectors.failover.ProcessDetector`, its own ``deadline_s``, ``score_threshold``
    and ``calls``. ``close`` releases this client only; the service belongs to whoever made it."""

    def __init__(self, service: DetectorService, *, deadline_s: float = 1.0) -> None:
        self.service = service
        self.deadline_s = deadline_s
        self.overload_after_s: float | None = None  # None: the service's, else ten times ``deadline_s``
        self.score_threshold = service.score_threshold
        self.calls = 0
        self.id = service._new_client_id()
        self._image = SharedImage()
        # more buffers for detect_many, each with an id of its own (the child maps one buffer per id)
        self._slots: list[tuple[int, SharedImage]] = []
        self._lock = threading.Lock()  # one call in flight per client: the buffers hold its images

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def sha256(self) -> str:
        return self.service.sha256

    @property
    def input_size(self) -> int:
        return self.service.input_size

    @property
    def nms_iou(self) -> float:
        return self.service.nms_iou

    @property
    def spec(self) -> Any:
        return self.service.spec

    @property
    def pid(self) -> int | None:
        return self.service.pid

    def alive(self) -> bool:
        return self.service.alive()

    def detect(self, image: np.ndarray, score_threshold: float | None = None) -> Detections:
        """Detect in the service; raise :class:`DetectorFailure` on a crash, when the child holds a batch unanswered
        for ``deadline_s`` (hung), or when the request stays queued past the service's overload limit."""
        return self.detect_many([image], score_threshold)[0]

    def detect_many(self, images: Sequence[np.ndarray], score_threshold: float | None = None) -> list[Detections]:
        """Detect in several images (a camera's tiles or motion regions), queued together so that the service
        answers them as one batch spread over its workers, not one call after another; failures as :meth:`detect`,
        raised once every image of the chunk in flight is settled (their buffers are then free again)."""
        threshold = self.score_threshold if score_threshold is None else score_threshold
        overload_s = self.overload_after_s or self.service.overload_after_s or 10 * self.deadline_s
        chunk = max(1, self.service.max_batch)
        results: list[Detections] = []
        with self._lock:
            for first in range(0, len(images), chunk):
                start = time.monotonic()
                requests = []
                for slot, image in enumerate(images[first:first + chunk]):
                    image = np.ascontiguousarray(image)
                    sender, buffer = self._slot(slot)
                    requests.append(_Request(sender, buffer.share(image), image.shape, image.dtype.str, threshold,
                                             overload_s))
                self.service.submit(*requests)
                failures = [self._settle(request, start) for request in requests]
                failure = next((f for f in failures if f is not None), None)
                if failure is not None:
                    raise DetectorFailure(f"{self.name}: {failure}")
                self.calls += len(requests)
                results += [request.result for request in requests]  # type: ignore[misc]
        return results

    def _slot(self, index: int) -> tuple[int, SharedImage]:
        if index == 0:
            return self.id, self._image
        while len(self._slots) < index:
            self._slots.append((self.service._new_client_id(), SharedImage()))
        return self._slots[index - 1]

    def _settle(self, request: _Request, start: float) -> str | None:
        """Wait for ``request`` (the service judges whether the model is hung); its failure reason, or None."""
        wait = max(self.deadline_s - (time.monotonic() - start), 0.0)
        while not request.done.wait(wait):
            reason, wait = self.service.overdue(request, self.deadline_s)
            if reason is not None:
                return reason
            if wait <= 0:
                break
        return request.error

    def restart(self) -> None:
        """Make sure the shared service is serving again (the failover's restart loop calls this)."""
        self.service.ensure_running()

    def close(self) -> None:
        with self._lock:
            self._image.close()
            for _, buffer in self._slots:
                buffer.close()
        for client in [self.id, *(sender for sender, _ in self._slots)]:
            self.service.forget(client)


class DetectorView:
    """One camera's face of an in-process detector shared by every camera (the backups, the second opinion):
    its own ``calls`` (per-camera statistics subtract them) and ``score_threshold``; ONNX Runtime sessions are
    safe to run from several threads."""

    def __init__(self, detector: DetectorLike) -> None:
        self.detector = detector
        self.score_threshold = detector.score_threshold
        self.calls = 0

    @property
    def name(self) -> str:
        return self.detector.name

    @property
    def sha256(self) -> str:
        return self.detector.sha256

    @property
    def input_size(self) -> int:
        return self.detector.input_size

    @property
    def nms_iou(self) -> float:
        return self.detector.nms_iou

    @property
    def spec(self) -> Any:
        return getattr(self.detector, "spec", None)

    def detect(self, image: np.ndarray, score_threshold: float | None = None) -> Detections:
        dets = self.detector.detect(image, self.score_threshold if score_threshold is None else score_threshold)
        self.calls += 1
        return dets


class SharedDetectors:
    """A node's detectors: the primary's :class:`DetectorService` and the backups, loaded once, handed to each
    camera as its own :class:`~trustcam.vision.detectors.failover.FailoverDetector` by :meth:`for_camera`."""

    def __init__(
        self,
        model: str,
        failover: Sequence[str],
        *,
        threads: int = 1,
        score_threshold: float = 0.3,
        deadline_s: float = 1.0,
        max_batch: int = 8,
        gather_s: float = 0.002,
        workers: int = 1,
        load: Callable[[str], DetectorLike] | None = None,
    ) -> None:
        self.deadline_s = deadline_s
        self.service = DetectorService(model, threads=threads, score_threshold=score_threshold, max_batch=max_batch,
                                       gather_s=gather_s, workers=workers)
        if load is None:
            from trustcam.vision.detectors.onnx_models import load_detector

            def load(name: str) -> DetectorLike:
                return load_detector(name, threads=threads, score_threshold=score_threshold)

        try:
            self.backups = [load(name) for name in dict.fromkeys(failover) if name != model]
        except BaseException:
            self.service.close()
            raise

    def for_camera(self, on_change: Callable[[CoverageChange], None] | None = None,
                   **failover_options: float) -> FailoverDetector:
        """This camera's failover front: its own client of the service, views of the shared backups."""
        return FailoverDetector(self.service.client(self.deadline_s), [DetectorView(b) for b in self.backups],
                                on_change=on_change, **failover_options)

    def close(self) -> None:
        self.service.close()
