"""Record a camera into the vault: segments of about ``segment_s`` remuxed from the camera's own packets.

Recording never re-encodes and never opens a second connection: the ingest source hands every demuxed video
packet to :meth:`Recorder.on_packet` before decoding it, and packets are muxed unchanged into an in-memory
fragmented MP4, so recording a camera costs a copy of its compressed bytes, not a decode. Plaintext video never
touches the disk: a closed segment goes to the sink (the vault encrypts it) or, in ``motion``/``events`` modes,
waits in memory as pre-capture and is dropped unless motion or an event claims it.

Segment times are wall-clock seconds: the connection's start time plus the packets' pts offset, timed by the least
delayed packet and re-anchored when the camera's clock drifts from ours, so segments line up with the frame times
the pipeline reports.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Protocol

import av
from av.video.stream import VideoStream

from trustcam.bus import Bus
from trustcam.config.schema import RecordConfig
from trustcam.events.model import EventEnded, EventStarted
from trustcam.storage.write_buffer import RETRY_FIRST_S, RETRY_MAX_S, transient

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

SegmentSink = Callable[[bytes, float, float, bool, list[str]], object]
"""``sink(data, start, end, has_motion, labels)``; :meth:`Vault.store_segment` is adapted to this."""


class SegmentStore(Protocol):
    """Anything with the vault's ``store_segment`` (the vault itself, or the space-guarded vault of ``run``)."""

    def store_segment(self, camera: str, data: bytes, start: float, end: float, *, has_motion: bool = False,
                      labels: Sequence[str] = ()) -> object: ...

# Fragmented MP4 written front to back: no seek back to patch a moov atom, so it can live in a BytesIO, and a
# segment cut short (crash, lost camera) up to its last fragment still plays.
MP4_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}
DRIFT_S = 2.0  # re-anchor segment times to our clock when the camera's timestamps lag further behind than this
MAX_GAP_S = 60.0  # a forward pts jump larger than this (or any real backward one) is a discontinuity
MOTION_MERGE_S = 1.0  # motion that pauses for less than this is one stretch of motion
QUEUE_SEGMENTS = 64  # segments waiting for the sink; more means the vault is stuck: newer ones are dropped
CLOSE_RETRY_S = 10.0  # at stop, a database still unreachable gets this long before the waiting segments are given up


@dataclass
class Segment:
    """A closed segment: fragmented-MP4 bytes and the wall-clock span they cover."""

    data: bytes
    start: float
    end: float


@dataclass
class RecorderStats:
    """What the recorder did, for status lines and tests."""

    segments: int = 0  # closed segments
    stored: int = 0  # accepted by the sink
    dropped: int = 0  # never wanted (motion/events modes), or lost to a stuck sink
    failed: int = 0  # the sink raised (for good: a database outage is waited out, see ``retries``)
    retries: int = 0  # store attempts repeated because the database was unreachable (a restart, a locked file)
    bytes_stored: int = 0
    last_error: str | None = None


@dataclass
class _Activity:
    """Motion or an event on this camera: its span (end None while it goes on) and, for events, its label."""

    kind: str  # "motion" or "event"
    start: float
    end: float | None = None
    label: str | None = None

    def overlaps(self, start: float, end: float, before: float = 0.0, after: float = 0.0) -> bool:
        stop = math.inf if self.end is None else self.end
        return self.start - before < end and start <= stop + after


@dataclass
class _Connection:
    """Timing of one connection: maps packet timestamps to segment-clock seconds."""

    stream: VideoStream
    time_base: Fraction
    frame_ts: int  # one frame in time_base units, for packets without duration or timestamps
    origin_ts: int | None = None  # the timestamp that maps to ``origin``
    origin: float = 0.0
    earliest: float = math.inf  # live: the earliest origin a packet of the open segment arrived for
    last_dts: int | None = None
    last_key_ts: int | None = None  # pts of the previous keyframe (the GOP length predicts the next one)
    usable: bool = True  # False: the codec cannot be put in MP4; packets are ignored

    def seconds(self, ts: int) -> float:
        return float((ts - (self.origin_ts or 0)) * self.time_base)

    def time(self, ts: int) -> float:
        return self.origin + self.seconds(ts)


class _SegmentWriter:
    """One open segment being muxed, without re-encoding, into a fragmented MP4 in memory."""

    def __init__(self, conn: _Connection, first_dts: int, first_pts: int, wall: float) -> None:
        self.buffer = io.BytesIO()
        self.container = av.open(self.buffer, "w", format="mp4", options=MP4_OPTIONS)
        self.stream = self.container.add_stream_from_template(conn.stream)
        self.conn = conn
        self.offset = first_dts  # the segment's timestamps start at 0
        self.first_pts = first_pts
        self.end_ts = first_pts  # where the last packet ends (input timestamps)
        self.wall = wall  # our clock when it started (for the wall-clock cut of live streams)
        self.packets = 0

    def add(self, packet: av.Packet, pts: int, dts: int, duration: int) -> None:
        out = av.Packet(packet)  # a new reference to the same bytes: the decoder still gets ``packet`` intact
        out.pts, out.dts, out.duration = pts - self.offset, dts - self.offset, duration
        out.time_base = self.conn.time_base
        out.is_keyframe = packet.is_keyframe
        out.stream = self.stream
        self.container.mux(out)
        self.packets += 1
        self.end_ts = max(self.end_ts, pts + duration)

    def finish(self, cut_ts: int | None = None) -> Segment:
        """Close the MP4; its span runs to ``cut_ts`` (the next segment's keyframe) or its last packet's end."""
        self.container.close()
        end = self.conn.time(self.end_ts if cut_ts is None else cut_ts)
        return Segment(self.buffer.getvalue(), self.conn.time(self.first_pts), end)

    def abandon(self) -> None:
        with contextlib.suppress(av.error.FFmpegError, ValueError, OSError):
            self.container.close()


class Recorder:
    """Turns one camera's packets into stored segments according to its ``record`` config.

    Thread-safe: packets come from the camera's reader thread, motion and events from its pipeline thread, and
    the sink is called from the recorder's own writer thread so that a slow disk never stalls the camera.

    ``clock`` gives segment times (wall clock); None uses media time instead, counted from the stream's start
    like :class:`~trustcam.ingest.frame.Frame` times of a file analysed at full speed. ``lag_s`` is how late
    activity may be reported after it began (an event is published once its track is confirmed): closed
    segments stay in memory that much longer than ``pre_capture_s``. ``settle_s`` is how long a closed segment
    waits for late motion/event reports before it is stored or set aside, so its labels are complete.
    """

    def __init__(
        self,
        camera: str,
        config: RecordConfig,
        sink: SegmentSink | SegmentStore,
        bus: Bus | None = None,
        *,
        clock: Callable[[], float] | None = time.time,
        lag_s: float = 10.0,
        settle_s: float = 2.0,
    ) -> None:
        self.camera = camera
        self.config = config
        self.clock = clock
        self.lag_s = lag_s
        self.settle_s = settle_s
        self.stats = RecorderStats()
        self._sink = sink
        self._lock = threading.RLock()
        self._conn: _Connection | None = None
        self._writer: _SegmentWriter | None = None
        self._pending: deque[Segment] = deque()  # closed, waiting for ``settle_s`` before the decision
        self._ring: deque[Segment] = deque()  # not wanted (yet): pre-capture for activity reported later
        self._activity: list[_Activity] = []
        self._motion: _Activity | None = None
        self._events: dict[str, _Activity] = {}
        self._now: float | None = None  # time of the newest packet
        self._closed = False
        self._closed_at: float | None = None  # when close() began: bounds how long a database outage is waited out
        self._database_gone = False  # the outage outlasted the stop: what still waits is given up at once
        self._retrying = False  # the writer is waiting out a database outage (the queue then grows)
        self._mux_errors = 0
        self._queue: queue.Queue[Segment | None] = queue.Queue()
        self._thread = threading.Thread(target=self._write_loop, name=f"recorder-{camera}", daemon=True)
        self._thread.start()
        if bus is not None:
            bus.subscribe(EventStarted, self.on_event_started)
            bus.subscribe(EventEnded, self.on_event_ended)

    # ---- input: connections and packets (reader thread) ----

    def on_connection(self, stream: VideoStream | None) -> None:
        """A connection opened (``stream``) or ended (None): either way the open segment ends here, because
        timestamps restart with each connection."""
        with self._lock:
            if self._closed:
                return
            self._end_segment()
            self._settle(final=True)
            if self.clock is None:  # media time restarts: older activity and pre-capture no longer line up
                self._drop_ring()
                self._activity.clear()
                self._events.clear()
                self._motion = None
                self._now = None
            self._conn = self._connect(stream) if stream is not None else None

    def on_packet(self, packet: av.Packet, stream: VideoStream) -> None:
        """One demuxed video packet, before decoding; cut, mux and hand on segments as they close."""
        with self._lock:
            if self._closed:
                return
            if self._conn is None or self._conn.stream is not stream:  # tapped without connection events
                self.on_connection(stream)
            conn = self._conn
            assert conn is not None
            if not conn.usable or packet.size == 0:
                return
            pts, dts = self._timestamps(conn, packet)
            if conn.origin_ts is None:
                conn.origin_ts = pts
                conn.origin = self.clock() if self.clock is not None else self._media_origin(conn)
            elif conn.last_dts is not None and self._discontinuity(conn, dts):
                self._end_segment()
                conn.origin, conn.origin_ts, conn.earliest = self._resume_time(), pts, math.inf
                conn.last_dts = conn.last_key_ts = None
            if conn.last_dts is not None and dts <= conn.last_dts:  # small reorder or repeat: keep dts rising
                dts = conn.last_dts + 1
                pts = max(pts, dts)
            if self.clock is not None:  # packets arrive late, never early: the earliest one times the stream
                conn.earliest = min(conn.earliest, self.clock() - conn.seconds(pts))
            if packet.is_keyframe:
                gop = conn.seconds(pts) - conn.seconds(conn.last_key_ts) if conn.last_key_ts is not None else 0.0
                if self._writer is not None and self._cut_due(pts, max(gop, 0.0)):
                    self._end_segment(pts)
                if self._writer is None:
                    self._start_segment(conn, pts, dts)
                conn.last_key_ts = pts
            if self._writer is None:
                return  # waiting for a keyframe: a segment must start with one to be playable
            duration = packet.duration or conn.frame_ts
            try:
                self._writer.add(packet, pts, dts, duration)
            except (av.error.FFmpegError, ValueError) as exc:
                self._mux_failed(exc)
                return
            conn.last_dts = dts
            end = conn.time(pts + duration)
            self._now = end if self._now is None else max(self._now, end)
            if self._pending:
                self._settle()

    # ---- input: motion and events (pipeline thread) ----

    def on_frame_result(self, time: float, motion: bool) -> None:
        """The pipeline's verdict for a frame at ``time``: is anything moving?"""
        with self._lock:
            if self._closed:
                return
            if motion and self._motion is None:
                last = next((a for a in reversed(self._activity) if a.kind == "motion"), None)
                if last is not None and last.end is not None and 0 <= time - last.end <= MOTION_MERGE_S:
                    last.end = None
                    self._motion = last
                else:
                    self._motion = _Activity("motion", time)
                    self._activity.append(self._motion)
                self._claim_ring()
            elif not motion and self._motion is not None:
                self._motion.end = max(time, self._motion.start)
                self._motion = None

    def on_event_started(self, message: EventStarted) -> None:
        event = message.event
        if event.camera != self.camera:
            return
        with self._lock:
            if self._closed:
                return
            activity = _Activity("event", event.start, None, event.label)
            self._events[event.id] = activity
            self._activity.append(activity)
            self._claim_ring()

    def on_event_ended(self, message: EventEnded) -> None:
        event = message.event
        if event.camera != self.camera:
            return
        with self._lock:
            if self._closed:
                return
            activity = self._events.pop(event.id, None)
            if activity is None:  # its start was never seen (the recorder started late)
                activity = _Activity("event", event.start, None, event.label)
                self._activity.append(activity)
            activity.start = min(activity.start, event.start)
            activity.end = max(event.end, activity.start)
            self._claim_ring()

    def close(self, timeout: float = 30.0) -> None:
        """Close the open segment, store what the mode wants, and wait for the sink to finish."""
        with self._lock:
            if self._closed:
                return
            self._end_segment()
            self._settle(final=True)
            self._drop_ring()
            self._closed = True
            self._closed_at = time.monotonic()
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("camera %s: the vault did not take the last segments within %gs", self.camera, timeout)
            return
        self._sign_head()

    def _sign_head(self) -> None:
        """Clean stop: the vault signs this camera's chain head, so the last segments are not left in the unsigned
        tail (which only a checkpoint due later would cover, and which a crash leaves open to undetected edits)."""
        target = getattr(self._sink, "vault", self._sink)  # the space-guarded vault of `run` wraps the vault
        close_camera = getattr(target, "close_camera", None)
        if close_camera is None:
            return
        try:
            close_camera(self.camera)
        except Exception:  # stopping must finish; the tail stays unsigned, as after a crash
            log.exception("camera %s: signing the chain head at stop failed", self.camera)

    # ---- segments ----

    def _connect(self, stream: VideoStream) -> _Connection:
        tb = stream.time_base or Fraction(1, 90_000)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        frame_ts = max(1, round(1 / (rate * tb))) if rate else max(1, round(Fraction(1, 25) / tb))
        conn = _Connection(stream, tb, frame_ts)
        try:  # refuse codecs MP4 cannot carry once per connection, not once per packet
            _SegmentWriter(conn, 0, 0, 0.0).abandon()
        except (av.error.FFmpegError, ValueError) as exc:
            conn.usable = False
            self.stats.last_error = f"cannot record {stream.codec_context.name} in MP4: {exc}"
            log.error("camera %s: %s; not recording", self.camera, self.stats.last_error)
        return conn

    def _timestamps(self, conn: _Connection, packet: av.Packet) -> tuple[int, int]:
        """pts and dts, filling in what the camera left out (RTSP often has no dts; some streams no pts)."""
        pts, dts = packet.pts, packet.dts
        if pts is None and dts is None:
            pts = dts = conn.last_dts + conn.frame_ts if conn.last_dts is not None else 0
        elif dts is None:
            dts = pts
        elif pts is None:
            pts = dts
        return int(pts), int(dts)  # type: ignore[arg-type]

    def _media_origin(self, conn: _Connection) -> float:
        """Media time of a connection's first packet, counted from the stream's start (as file frame times are)."""
        start = conn.stream.start_time
        if start is None or conn.origin_ts is None:
            return 0.0
        return max(0.0, float((conn.origin_ts - start) * conn.time_base))

    def _discontinuity(self, conn: _Connection, dts: int) -> bool:
        """The camera's clock jumped (reset, wrap, or a long gap): timestamps no longer join the segment's."""
        assert conn.last_dts is not None
        step = float((dts - conn.last_dts) * conn.time_base)
        return step < -1.0 or step > MAX_GAP_S

    def _resume_time(self) -> float:
        if self.clock is not None:
            return self.clock()
        return self._now or 0.0

    def _cut_due(self, pts: int, gop: float) -> bool:
        """At a keyframe: end the segment here if this keyframe is nearer ``segment_s`` than the next one is
        likely to be (the last GOP predicts it), so segments average ``segment_s`` instead of always overshooting;
        a live stream is also cut by our clock, in case its timestamps stall."""
        writer = self._writer
        assert writer is not None
        elapsed = writer.conn.seconds(pts) - writer.conn.seconds(writer.first_pts)
        if self.clock is not None:
            elapsed = max(elapsed, self.clock() - writer.wall)
        target = self.config.segment_s
        return elapsed >= target - min(gop, target) / 2

    def _start_segment(self, conn: _Connection, pts: int, dts: int) -> None:
        try:
            self._writer = _SegmentWriter(conn, dts, pts, self.clock() if self.clock is not None else 0.0)
        except (av.error.FFmpegError, ValueError) as exc:
            self._mux_failed(exc)

    def _retime(self, conn: _Connection) -> None:
        """Live: time the closing segment by its least delayed packet. The first packets of a connection come in
        a burst after probing, so the first arrival is late; and a camera clock that runs slow drifts behind ours
        (re-anchored past ``DRIFT_S``)."""
        if self.clock is None or conn.earliest == math.inf:
            return
        if conn.earliest < conn.origin or conn.earliest > conn.origin + DRIFT_S:
            conn.origin = conn.earliest
        conn.earliest = math.inf

    def _end_segment(self, cut_ts: int | None = None) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if writer.packets == 0:
            writer.abandon()
            return
        self._retime(writer.conn)
        try:
            segment = writer.finish(cut_ts)
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            self._mux_failed(exc)
            return
        self.stats.segments += 1
        self._pending.append(segment)

    def _mux_failed(self, exc: Exception) -> None:
        """Muxing failed (timestamps the muxer rejects): keep what was written, restart at the next keyframe."""
        self._mux_errors += 1
        self.stats.last_error = f"muxing failed: {exc}"
        if self._mux_errors == 1 or self._mux_errors % 100 == 0:
            log.warning("camera %s: recording: %s (%d times); restarting at the next keyframe", self.camera,
                        exc, self._mux_errors)
        writer, self._writer = self._writer, None
        if writer is not None and writer.packets:
            self._retime(writer.conn)
            with contextlib.suppress(av.error.FFmpegError, ValueError, OSError):
                self._pending.append(writer.finish())
                self.stats.segments += 1
        elif writer is not None:
            writer.abandon()

    # ---- decisions: store, keep as pre-capture, or drop ----

    def _wanted(self, segment: Segment) -> bool:
        mode = self.config.mode
        if mode == "continuous":
            return True
        kind = "motion" if mode == "motion" else "event"
        pre, post = self.config.pre_capture_s, self.config.post_capture_s
        return any(a.kind == kind and a.overlaps(segment.start, segment.end, pre, post) for a in self._activity)

    def _settle(self, final: bool = False) -> None:
        """Decide closed segments once late reports had ``settle_s`` to arrive (all of them when ``final``)."""
        now = self._now
        while self._pending and (final or now is None or now - self._pending[0].end >= self.settle_s):
            segment = self._pending.popleft()
            if self._wanted(segment):
                self._claim_ring()
                self._drop_ring()  # anything older can no longer be stored in order
                self._store(segment)
            else:
                self._ring.append(segment)
        keep = self.config.pre_capture_s + self.lag_s
        while self._ring and now is not None and now - self._ring[0].end > keep:
            self._ring.popleft()
            self.stats.dropped += 1
        self._forget_activity()

    def _claim_ring(self) -> None:
        """Activity was reported: store set-aside segments it wants (pre-capture), oldest first."""
        if not self._ring or self.config.mode == "continuous":
            return
        wanted = [i for i, segment in enumerate(self._ring) if self._wanted(segment)]
        if not wanted:
            return
        ring = list(self._ring)
        self._ring = deque(ring[wanted[-1] + 1:])
        self.stats.dropped += wanted[-1] + 1 - len(wanted)  # older than stored footage: cannot follow it
        for i in wanted:
            self._store(ring[i])

    def _drop_ring(self) -> None:
        self.stats.dropped += len(self._ring)
        self._ring.clear()

    def _forget_activity(self) -> None:
        """Activity that ended long before every segment still in memory cannot matter any more."""
        if self._now is None:
            return
        horizon = (self.config.pre_capture_s + self.config.post_capture_s + self.lag_s + self.settle_s
                   + 3 * self.config.segment_s)
        self._activity = [a for a in self._activity if a.end is None or a.end > self._now - horizon]

    def _store(self, segment: Segment) -> None:
        has_motion = any(a.kind == "motion" and a.overlaps(segment.start, segment.end) for a in self._activity)
        labels = sorted({a.label for a in self._activity
                         if a.kind == "event" and a.label and a.overlaps(segment.start, segment.end)})
        if self._queue.qsize() >= QUEUE_SEGMENTS:
            self.stats.dropped += 1
            why = ("the database has been unreachable too long" if self._retrying
                   else "the vault is not keeping up")
            self.stats.last_error = f"{why}; segment dropped"
            log.error("camera %s: %s (%d segments waiting); dropped the segment %.1f-%.1f", self.camera, why,
                      self._queue.qsize(), segment.start, segment.end)
            return
        self._queue.put(_Tagged(segment.data, segment.start, segment.end, has_motion, labels))

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            assert isinstance(item, _Tagged)
            self._write(item)

    def _write(self, item: _Tagged) -> None:
        """Store one segment; while the database is unreachable (a PostgreSQL restart, a SQLite file locked) retry
        it with backoff, later segments waiting behind it in the queue (order holds: the chain is appended in
        order). Anything else, or an outage outlasting the stop by ``CLOSE_RETRY_S``, loses the segment (counted)."""
        if self._database_gone:  # stopping, and the database stayed away: the rest is lost without more waiting
            self.stats.failed += 1
            log.error("camera %s: segment %.1f-%.1f NOT STORED: the database was still unreachable at stop",
                      self.camera, item.start, item.end)
            return
        store = getattr(self._sink, "store_segment", None)
        delay = RETRY_FIRST_S
        while True:
            try:
                if store is not None:
                    store(self.camera, item.data, item.start, item.end, has_motion=item.has_motion,
                          labels=item.labels)
                else:
                    self._sink(item.data, item.start, item.end, item.has_motion, item.labels)  # type: ignore[operator]
                break
            except Exception as exc:
                closing = self._closed_at is not None and time.monotonic() - self._closed_at > CLOSE_RETRY_S
                if transient(exc) and not closing:
                    if delay == RETRY_FIRST_S:
                        log.warning("camera %s: database unreachable while storing the segment %.1f-%.1f (%s); it "
                                    "and later segments wait (up to %d) and are retried every %g s at most",
                                    self.camera, item.start, item.end, type(exc).__name__, QUEUE_SEGMENTS,
                                    RETRY_MAX_S)
                    self.stats.retries += 1
                    self._retrying = True
                    time.sleep(delay)
                    delay = min(2 * delay, RETRY_MAX_S)
                    continue
                self._database_gone = transient(exc)
                self.stats.failed += 1
                self.stats.last_error = f"storing a segment failed: {exc}"
                if self.stats.failed == 1:  # the traceback once; then one line per lost segment
                    log.exception("camera %s: storing the segment %.1f-%.1f failed", self.camera, item.start,
                                  item.end)
                else:
                    log.error("camera %s: storing the segment %.1f-%.1f failed (%d so far): %s", self.camera,
                              item.start, item.end, self.stats.failed, exc)
                return
        if delay != RETRY_FIRST_S:
            self._retrying = False
            log.info("camera %s: database back; the segment %.1f-%.1f is stored", self.camera, item.start, item.end)
        self.stats.stored += 1
        self.stats.bytes_stored += len(item.data)


@dataclass
class _Tagged(Segment):
    """A segment on its way to the sink, with what was seen in it."""

    has_motion: bool = False
    labels: list[str] = field(default_factory=list)
