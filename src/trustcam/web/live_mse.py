"""Live video for Media Source Extensions: the camera's own packets remuxed into fragmented MP4, one frame a fragment.

No decoding and no re-encoding: the stream's demuxed packets (the same tap the recorder uses) are muxed by PyAV into
an in-memory fragmented MP4 (``empty_moov``, one ``moof``+``mdat`` per frame, so a frame leaves as soon as the next
one arrives instead of a whole GOP later). Muxing runs once per camera whatever the number of viewers, and only while
someone watches (plus :data:`LINGER_S`), so a camera nobody watches costs one function call per packet.

Each viewer gets the init segment first, then fragments from a keyframe: the fragments since the latest keyframe
are kept, so a new viewer starts at once (its player seeks to the live edge). A viewer's queue is bounded: one that
reads too slowly loses what it had queued and resumes at the next keyframe, so memory never grows with a slow client.

Timestamps are rebased onto one rising timeline (90 kHz) across reconnections and file loops, so a player keeps
playing when the camera reconnects; a stream whose codec parameters change starts a new init segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
from av.video.stream import VideoStream

from trustcam.ingest.frame import Frame
from trustcam.vision.tracker import TrackedObject

log = logging.getLogger(__name__)

MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof+frag_every_frame"
TIMESCALE = 90_000  # output ticks per second (MPEG's clock: exact for 25, 30, 12.5 and 10 fps)
LINGER_S = 30.0  # keep muxing this long after the last viewer left, so a reload starts at once
MAX_GOP_BYTES = 16 * 1024 * 1024  # fragments kept since the last keyframe; a longer GOP waits for the next one
VIEWER_MAX_BYTES = 4 * 1024 * 1024  # per viewer: more queued means it reads too slowly; it resumes at a keyframe
VIEWER_MAX_ITEMS = 256
CLOCK_EVERY_S = 0.5  # a {"type": "clock"} stamp (media time ↔ wall time the packet arrived) this often


@dataclass
class Item:
    """One message for a viewer: ``kind`` init (binary init segment, ``meta`` describes it), frag (binary media
    fragment) or json (``meta`` is sent as a text message)."""

    kind: str
    data: bytes = b""
    meta: dict[str, Any] = field(default_factory=dict)
    key: bool = False


class Viewer:
    """One watching socket's bounded queue; filled by the camera thread, drained by the socket's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_bytes: int = VIEWER_MAX_BYTES,
                 max_items: int = VIEWER_MAX_ITEMS) -> None:
        self.loop = loop
        self.max_bytes = max_bytes
        self.max_items = max_items
        self.ready = asyncio.Event()
        self.dropped = 0  # fragments lost to slowness (tests and logs read it)
        self._items: deque[Item] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self._resync = True  # waiting for an init segment or a keyframe
        self._signalled = False

    def push(self, item: Item) -> None:
        with self._lock:
            if item.kind == "init":
                self._items.clear()
                self._bytes = 0
                self._resync = False
            elif item.kind == "frag":
                if self._resync and not item.key:
                    self.dropped += 1
                    return
                if self._bytes + len(item.data) > self.max_bytes or len(self._items) >= self.max_items:
                    self._drop_media()
                    if not item.key:
                        self.dropped += 1
                        return
                self._resync = False
            elif self._resync or len(self._items) >= self.max_items:
                return  # boxes are worthless without the video they go with
            self._items.append(item)
            self._bytes += len(item.data)
            if self._signalled:
                return
            self._signalled = True
        with contextlib.suppress(RuntimeError):  # the loop closed: the socket is gone anyway
            self.loop.call_soon_threadsafe(self.ready.set)

    def _drop_media(self) -> None:
        """Too far behind: forget queued fragments (the init segment stays) and wait for the next keyframe."""
        kept = deque(i for i in self._items if i.kind == "init")
        self.dropped += sum(1 for i in self._items if i.kind == "frag")
        self._items = kept
        self._bytes = sum(len(i.data) for i in kept)
        self._resync = True

    def take(self) -> list[Item]:
        """Everything queued (called on the loop after ``ready``)."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self._bytes = 0
            self._signalled = False
            self.ready.clear()
        return items


def codec_string(stream: VideoStream) -> str | None:
    """The RFC 6381 ``codecs`` value a browser needs for ``MediaSource.isTypeSupported`` (None: not H.264/H.265)."""
    ctx = stream.codec_context
    extradata = ctx.extradata or b""
    if ctx.name == "h264" and len(extradata) >= 4 and extradata[0] == 1:  # avcC: profile, constraints, level
        return f"avc1.{extradata[1]:02X}{extradata[2]:02X}{extradata[3]:02X}"
    if ctx.name == "hevc" and len(extradata) >= 13 and extradata[0] == 1:  # hvcC
        space = "ABC"[(extradata[1] >> 6) - 1] if extradata[1] >> 6 else ""
        profile = extradata[1] & 0x1F
        tier = "H" if extradata[1] & 0x20 else "L"
        compat = int.from_bytes(extradata[2:6], "big")
        compat = int(f"{compat:032b}"[::-1], 2)  # written bit-reversed
        constraints = extradata[6:12].rstrip(b"\0")
        tail = "".join(f".{b:X}" for b in constraints)
        return f"hvc1.{space}{profile}.{compat:X}.{tier}{extradata[12]}{tail}"
    return None


def _boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    """Top-level MP4 boxes of ``data`` as (type, bytes); the muxer always writes whole boxes per flush."""
    out, at = [], 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at:at + 4], "big")
        kind = data[at + 4:at + 8]
        if size == 1:
            size = int.from_bytes(data[at + 8:at + 16], "big")
        if size < 8 or at + size > len(data):
            break
        out.append((kind, data[at:at + size]))
        at += size
    return out


def _sample_count(moof: bytes) -> int:
    at = moof.find(b"trun")
    return int.from_bytes(moof[at + 8:at + 12], "big") if at >= 0 else 1


class _Sink:
    """Where the muxer writes (not seekable: FFmpeg then flushes each fragment as soon as it is complete)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


@dataclass
class _Connection:
    """One connection's timestamps mapped onto the output timeline."""

    stream: VideoStream
    time_base: Fraction
    offset: int  # output ticks where this connection's origin lands
    origin: int | None = None  # input timestamp mapped to ``offset``
    first_pts: int | None = None
    last_pts: int | None = None

    def ticks(self, ts: int) -> int:
        return self.offset + round((ts - (self.origin or 0)) * self.time_base * TIMESCALE)

    def holds(self, pts: int) -> bool:
        return self.first_pts is not None and self.last_pts is not None and self.first_pts <= pts <= self.last_pts


def _params(stream: VideoStream) -> tuple[object, ...]:
    ctx = stream.codec_context
    return (ctx.name, ctx.width, ctx.height, bytes(ctx.extradata or b""))


class _Muxer:
    """The fragmented-MP4 muxer of one generation (one set of codec parameters)."""

    def __init__(self, stream: VideoStream) -> None:
        self.params = _params(stream)
        self.codec = codec_string(stream)
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        self.sink = _Sink()
        self.container = av.open(self.sink, "w", format="mp4", options={"movflags": MOVFLAGS, "flush_packets": "1"})
        self.stream = self.container.add_stream_from_template(stream)
        self.stream.time_base = Fraction(1, TIMESCALE)
        self.init: bytes | None = None
        self.waiting: deque[tuple[bool, float, int]] = deque()  # (keyframe, arrival wall time, dts) muxed, not out

    def close(self) -> None:
        with contextlib.suppress(av.error.FFmpegError, ValueError, OSError):
            self.container.close()


class CameraFeed:
    """One camera: packets in (camera reader thread), init segment + fragments + object boxes out to viewers."""

    def __init__(self, camera: str, zones: dict[str, list[tuple[float, float]]] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.camera = camera
        self.zones = zones or {}
        self.clock = clock
        self.fragments = 0  # media fragments produced (tests and the bench read it)
        self._lock = threading.RLock()
        self._viewers: list[Viewer] = []
        self._idle_since: float | None = time.monotonic() - LINGER_S  # no viewer: not muxing
        self._conn: _Connection | None = None
        self._previous: _Connection | None = None  # for late analysis results of the last connection
        self._muxer: _Muxer | None = None
        self._gop: list[Item] = []  # fragments since the latest keyframe (a new viewer starts there)
        self._gop_bytes = 0
        self._end = 0  # output tick where the last packet ends: the next connection continues from here
        self._last_dts: int | None = None
        self._frame_ticks = TIMESCALE // 25
        self._last_clock = -math.inf
        self._errors = 0
        self._pending: Item | None = None  # a fragment's moof, waiting for its mdat
        self._pending_stamp = (0.0, 0)

    # ---- viewers (event loop) ----

    def subscribe(self, viewer: Viewer) -> None:
        """Start ``viewer`` with the init segment and the fragments since the latest keyframe (if muxing)."""
        with self._lock:
            self._viewers.append(viewer)
            self._idle_since = None
            muxer = self._muxer
            if muxer is not None and muxer.init is not None and self._gop:
                viewer.push(self._init_item(muxer))
                for item in self._gop:
                    viewer.push(item)

    def unsubscribe(self, viewer: Viewer) -> None:
        with self._lock:
            if viewer in self._viewers:
                self._viewers.remove(viewer)
            if not self._viewers:
                self._idle_since = time.monotonic()

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    # ---- packets (camera reader thread) ----

    def on_connection(self, stream: VideoStream | None) -> None:
        """A connection opened or ended: the next packets continue the timeline after the last one."""
        with self._lock:
            if self._conn is not None:
                self._previous = self._conn
            self._conn = _Connection(stream, stream.time_base, self._end) if stream is not None else None

    def on_packet(self, packet: av.Packet, stream: VideoStream) -> None:
        with self._lock:
            if not self._active():
                self._stop_muxing()
                return
            if self._conn is None or self._conn.stream is not stream:  # attached mid-connection
                self.on_connection(stream)
            try:
                self._add(packet, stream)
            except (av.error.FFmpegError, ValueError, OSError) as exc:
                self._errors += 1
                if self._errors == 1 or self._errors % 1000 == 0:
                    log.warning("camera %s: live video muxing failed (%s, %d times); restarting at the next keyframe",
                                self.camera, exc, self._errors)
                self._stop_muxing()

    def _active(self) -> bool:
        return self._idle_since is None or time.monotonic() - self._idle_since < LINGER_S

    def _stop_muxing(self) -> None:
        if self._muxer is not None:
            self._muxer.close()
            self._muxer = None
            self._gop, self._gop_bytes = [], 0

    def _add(self, packet: av.Packet, stream: VideoStream) -> None:
        conn = self._conn
        assert conn is not None
        if self._muxer is not None and self._muxer.params != _params(stream):
            self._stop_muxing()  # new codec parameters: a new init segment, from the next keyframe
        if self._muxer is None:
            if not packet.is_keyframe:
                return
            if codec_string(stream) is None and stream.codec_context.name not in ("h264", "hevc"):
                return  # MP4 in a browser: H.264/H.265 only; MJPEG stays the way to watch it
            self._muxer = _Muxer(stream)
        pts = packet.pts if packet.pts is not None else packet.dts
        dts = packet.dts if packet.dts is not None else pts
        if pts is None or dts is None:
            out_dts = (self._last_dts + self._frame_ticks) if self._last_dts is not None else self._end
            out_pts = out_dts
        else:
            if conn.origin is None:
                conn.origin = dts
            conn.first_pts = pts if conn.first_pts is None else min(conn.first_pts, pts)
            conn.last_pts = pts if conn.last_pts is None else max(conn.last_pts, pts)
            out_pts, out_dts = conn.ticks(pts), conn.ticks(dts)
        if self._last_dts is not None and out_dts <= self._last_dts:  # keep dts rising (repeats, clock steps)
            out_pts += self._last_dts + 1 - out_dts
            out_dts = self._last_dts + 1
        duration = round(packet.duration * conn.time_base * TIMESCALE) if packet.duration else self._frame_ticks
        if packet.duration:
            self._frame_ticks = max(1, duration)
        out = av.Packet(packet)  # a new reference to the same bytes: the decoder still gets ``packet`` intact
        out.pts, out.dts, out.duration = out_pts, out_dts, duration
        out.time_base = Fraction(1, TIMESCALE)
        out.is_keyframe = packet.is_keyframe
        out.stream = self._muxer.stream
        muxer = self._muxer
        muxer.waiting.append((bool(packet.is_keyframe), self.clock(), out_pts))
        muxer.container.mux(out)
        self._last_dts = out_dts
        self._end = max(self._end, out_pts + duration, out_dts + duration)
        self._collect(muxer)

    def _collect(self, muxer: _Muxer) -> None:
        """Hand out what the muxer flushed: the init segment once, then one fragment per finished frame."""
        data = muxer.sink.take()
        init = b""
        for kind, box in _boxes(data):
            if kind in (b"ftyp", b"moov"):
                init += box
            elif kind == b"moof":
                count = _sample_count(box)
                key, wall, pts = muxer.waiting[0] if muxer.waiting else (False, self.clock(), 0)
                for _ in range(min(count, len(muxer.waiting))):
                    muxer.waiting.popleft()
                self._pending = Item("frag", box, key=key)
                self._pending_stamp = (wall, pts)
            elif kind == b"mdat" and self._pending is not None:
                item, self._pending = self._pending, None
                item.data += box
                self._fragment(item, *self._pending_stamp)
        if init:
            muxer.init = init
            item = self._init_item(muxer)
            for viewer in self._viewers:
                viewer.push(item)

    def _init_item(self, muxer: _Muxer) -> Item:
        meta = {"type": "init", "camera": self.camera, "codec": muxer.codec,
                "mime": f'video/mp4; codecs="{muxer.codec}"' if muxer.codec else None,
                "width": muxer.width, "height": muxer.height,
                "zones": {name: [list(p) for p in points] for name, points in self.zones.items()}}
        return Item("init", muxer.init or b"", meta)

    def _fragment(self, item: Item, wall: float, pts: int) -> None:
        self.fragments += 1
        if item.key:
            self._gop, self._gop_bytes = [], 0
        if self._gop_bytes + len(item.data) <= MAX_GOP_BYTES:
            self._gop.append(item)
            self._gop_bytes += len(item.data)
        stamp = None
        if item.key or wall - self._last_clock >= CLOCK_EVERY_S:
            self._last_clock = wall
            stamp = Item("json", meta={"type": "clock", "t": pts / TIMESCALE, "wall": wall})
        for viewer in self._viewers:
            viewer.push(item)
            if stamp is not None:
                viewer.push(stamp)

    # ---- analysis results (camera pipeline thread) ----

    def media_time(self, frame: Frame) -> float | None:
        """Where ``frame`` plays on the output timeline (seconds), or None when its connection is unknown."""
        pts = getattr(frame._source, "pts", None)  # the decoded frame keeps the packet's timestamp
        if pts is None:
            return None
        previous, conn = self._previous, self._conn
        if previous is not None and previous.holds(pts):  # analysed after the camera reconnected or the file looped
            return previous.ticks(pts) / TIMESCALE
        if conn is not None and conn.origin is not None:
            return conn.ticks(pts) / TIMESCALE
        return None

    def on_result(self, frame: Frame, objects: Sequence[TrackedObject]) -> None:
        """Boxes of an analysed frame, as fractions of the picture, for the viewers to draw over the video."""
        if not self._viewers:
            return
        w, h = frame.size
        with self._lock:
            t = self.media_time(frame)
        message = {"type": "objects", "t": t, "wall": frame.time, "objects": [
            {"id": o.track_id, "label": o.label, "score": round(float(o.score), 3),
             "box": [round(float(o.box[0]) / w, 4), round(float(o.box[1]) / h, 4), round(float(o.box[2]) / w, 4),
                     round(float(o.box[3]) / h, 4)]} for o in objects]}
        item = Item("json", meta=message)
        for viewer in list(self._viewers):
            viewer.push(item)


class LiveVideo:
    """Every camera's :class:`CameraFeed`, attached to the running cameras' packet taps and the live hub."""

    def __init__(self, feeds: dict[str, CameraFeed]) -> None:
        self.feeds = feeds

    @classmethod
    def attach(cls, ctx: Any) -> LiveVideo:
        """Feeds for ``ctx``'s cameras, tapping the service's camera workers (none without a service)."""
        zones = {name: {z: [tuple(p) for p in cfg.coordinates] for z, cfg in cam.zones.items()}
                 for name, cam in ctx.settings.cameras.items() if cam.enabled}
        feeds = {name: CameraFeed(name, zones[name]) for name in zones}
        for worker in ctx.service.workers if ctx.service is not None else ():
            feed = feeds.get(worker.camera_name)
            if feed is not None:
                worker.taps.add(feed.on_packet, feed.on_connection)
        if ctx.live is not None:
            ctx.live.add_listener(lambda camera, frame, objects: feeds[camera].on_result(frame, objects)
                                  if camera in feeds else None)
        return cls(feeds)


_attach_lock = threading.Lock()


def live_video(ctx: Any) -> LiveVideo:
    """The app's :class:`LiveVideo`, attached on first use: until someone opens a live socket, nothing is tapped."""
    found = ctx.extras.get("live_video")
    if found is None:
        with _attach_lock:
            found = ctx.extras.get("live_video")
            if found is None:
                found = ctx.extras["live_video"] = LiveVideo.attach(ctx)
    return found  # type: ignore[no-any-return]
