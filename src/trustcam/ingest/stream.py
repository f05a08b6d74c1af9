"""A camera stream that never gives up: reconnect with exponential backoff and jitter, forever.

A process restart is never needed to get a camera back; the stats say how healthy each stream is
(fps, stalls, reconnects, last error) so that a silent camera is visible.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from trustcam.ingest.frame import Frame
from trustcam.ingest.source import ConnectionTap, PacketTap, SourceError, VideoSource, redact

log = logging.getLogger(__name__)


@dataclass
class Backoff:
    """Exponential backoff with jitter: delay n is uniform in [base/2, min(cap, base * 2**n)], so cameras that
    dropped together do not all retry at once, and never retry in a busy loop."""

    base_s: float = 0.5
    cap_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        # The exponent is bounded: a camera down for days must not overflow the float (2**1100 does).
        ceiling = min(self.cap_s, self.base_s * (2 ** min(self.attempt, 60)))
        self.attempt += 1
        return self.rng.uniform(min(self.base_s / 2, ceiling), ceiling)

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class StreamStats:
    """Health of one stream, updated by its reader thread and read by anyone."""

    frames: int = 0
    connects: int = 0
    reconnects: int = 0
    stalls: int = 0
    connected: bool = False
    last_error: str | None = None
    last_frame_wall: float | None = None
    fps: float = 0.0

    def on_frame(self, now: float) -> None:
        if self.last_frame_wall is not None:
            gap = max(now - self.last_frame_wall, 1e-6)
            self.fps = 1.0 / gap if self.fps == 0 else 0.9 * self.fps + 0.1 / gap
        self.last_frame_wall = now
        self.frames += 1


class LiveStream:
    """Yields frames from ``url`` across disconnections until :meth:`stop` is called.

    One decoder thread (``threads``): a camera's frames come at its own rate and one core decodes a 1080p frame in
    ~5 ms, so frame threads only cost memory (~16 MiB more per 1080p camera) and a frame of latency per thread,
    while the cameras of a node already use every core. Frames that sampling drops are not decoded where no other
    frame needs them (``skip_unsampled``, see :class:`VideoSource`): recording and live video take packets, and
    every monitor sees only sampled frames.
    """

    def __init__(
        self,
        url: str,
        *,
        fps: float | None,
        size: tuple[int, int] | None,
        timeout_s: float = 10.0,
        rtsp_transport: str = "tcp",
        backoff: Backoff | None = None,
        packet_tap: PacketTap | None = None,
        connection_tap: ConnectionTap | None = None,
        threads: int = 1,
        skip_unsampled: bool = True,
    ) -> None:
        self.url = url
        self.threads = threads
        self.skip_unsampled = skip_unsampled
        self.fps = fps
        self.size = size
        self.timeout_s = timeout_s
        self.rtsp_transport = rtsp_transport
        self.backoff = backoff or Backoff()
        self.packet_tap = packet_tap  # handed to each connection's VideoSource (see there)
        self.connection_tap = connection_tap
        self.stats = StreamStats()
        self.source: VideoSource | None = None  # the current connection (its report: packets read, frames decoded)
        self._stop = threading.Event()

    def stop(self) -> None:
        """Make :meth:`frames` return: at once between frames or while waiting to reconnect; within
        ``timeout_s`` while blocked on a silent camera (each read gives up after that long)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def frames(self) -> Iterator[Frame]:
        try:
            yield from self._frames()
        finally:
            self.stats.connected = False

    def _frames(self) -> Iterator[Frame]:
        index = 0
        name = redact(self.url)
        while not self._stop.is_set():
            source = VideoSource(
                self.url, fps=self.fps, size=self.size, timeout_s=self.timeout_s, rtsp_transport=self.rtsp_transport,
                packet_tap=self.packet_tap, connection_tap=self.connection_tap, threads=self.threads,
                skip_unsampled=self.skip_unsampled,
            )
            self.source = source
            got_frame = False
            decoded = source.frames()
            try:
                for frame in decoded:
                    if self._stop.is_set():
                        return
                    if not got_frame:
                        got_frame = True
                        self.stats.connected = True
                        self.stats.connects += 1
                        self.backoff.reset()
                        log.info("%s: connected", name)
                    self.stats.on_frame(time.time())
                    frame.index = index
                    index += 1
                    yield frame
                    if self._stop.is_set():
                        return
                if source.kind == "file":
                    reason = f"{name}: end of file; playing it again"
                else:
                    reason = f"{name}: the stream ended (the camera or server closed the connection)"
            except SourceError as exc:
                reason = str(exc)
            finally:
                decoded.close()
            self.stats.connected = False
            self.stats.last_error = reason
            if got_frame:
                self.stats.stalls += 1
            if self._stop.is_set():
                return
            delay = self.backoff.next_delay()
            self.stats.reconnects += 1
            log.warning("%s; reconnecting in %.1fs (attempt %d)", reason, delay, self.backoff.attempt)
            self._stop.wait(delay)
