"""Open a camera or file with FFmpeg (PyAV) and decode frames, sampled to the analysis rate.

One :class:`VideoSource` is one connection. Failures become :class:`SourceError` with a message naming the
source (credentials hidden), what went wrong and what to check; reconnecting is :mod:`trustcam.ingest.stream`'s job.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import av

from trustcam.errors import UserError
from trustcam.ingest.frame import Frame

log = logging.getLogger(__name__)

SourceKind = Literal["rtsp", "http", "file", "usb"]

_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


PacketTap = Callable[[av.Packet, av.video.stream.VideoStream], None]
"""Called with every demuxed video packet before it is decoded (recording remuxes them: no second connection,
no decoding for it)."""
ConnectionTap = Callable[[av.video.stream.VideoStream | None], None]
"""Called with the video stream when a connection opens (before its first packet), and with None when it ends,
so that a recording starts a new segment on each connection and closes it when the stream stops."""


class TapFanout:
    """Several packet and connection taps on one stream (the recorder, live video): each gets every call, and one
    that fails does not keep the others from theirs. Taps may be added while the stream runs (live video attaches
    when the first viewer comes)."""

    def __init__(self) -> None:
        self._taps: tuple[tuple[PacketTap | None, ConnectionTap | None], ...] = ()
        self._lock = threading.Lock()
        self.errors = 0

    def add(self, packet_tap: PacketTap | None, connection_tap: ConnectionTap | None = None) -> None:
        with self._lock:  # copy on write: the reader thread iterates a tuple that never changes under it
            self._taps = (*self._taps, (packet_tap, connection_tap))

    def __len__(self) -> int:
        return len(self._taps)

    def on_packet(self, packet: av.Packet, stream: av.video.stream.VideoStream) -> None:
        for tap, _ in self._taps:
            if tap is not None:
                self._call(tap, packet, stream)

    def on_connection(self, stream: av.video.stream.VideoStream | None) -> None:
        for _, tap in self._taps:
            if tap is not None:
                self._call(tap, stream)

    def _call(self, tap: Callable[..., None], *args: object) -> None:
        try:
            tap(*args)
        except Exception:
            self.errors += 1
            if self.errors == 1 or self.errors % 1000 == 0:
                log.exception("packet tap %r failed (%d times; the other taps and analysis go on)", tap, self.errors)


class SourceError(UserError):
    """The source cannot be opened or read; the message says which source and what to do."""


def source_kind(url: str) -> SourceKind:
    lower = url.lower()
    if lower.startswith(("rtsp://", "rtsps://")):
        return "rtsp"
    if lower.startswith(("http://", "https://")):
        return "http"
    if re.match(r"^/dev/video\d+$", url):
        return "usb"
    return "file"


def redact(url: str) -> str:
    """Hide the password in ``scheme://user:password@host`` so that logs never leak camera credentials."""
    # FFmpeg ends the user:password part at the last '@' before any '/', '?' or '#', so a raw '@' in a password
    # is allowed: hide everything up to that last '@'.
    return re.sub(r"(://[^:/?#@]+):[^/?#]*@", r"\1:***@", url)


# How much of a live stream FFmpeg reads to learn its codecs before the first frame. FFmpeg's default (5 s for
# MPEG-TS) makes every (re)connect slow; one second is plenty for a camera's size and codec.
LIVE_ANALYZE_S = 1.0


def ffmpeg_options(url: str, timeout_s: float, rtsp_transport: str = "tcp") -> dict[str, str]:
    """FFmpeg demuxer options so that a dead camera fails within ``timeout_s`` instead of hanging forever.

    ``timeout`` (RTSP) and ``rw_timeout`` (HTTP) are in microseconds and bound each network wait: connect, and
    every read, so a camera that stops sending fails after ``timeout_s`` of silence.
    """
    micros = str(int(timeout_s * 1_000_000))
    analyze = str(int(LIVE_ANALYZE_S * 1_000_000))
    kind = source_kind(url)
    if kind == "rtsp":
        return {"rtsp_transport": rtsp_transport, "timeout": micros, "fflags": "nobuffer", "analyzeduration": analyze}
    if kind == "http":
        return {"rw_timeout": micros, "reconnect": "0", "analyzeduration": analyze}
    return {}


@dataclass
class DecodeReport:
    """What one pass over a source did: frames seen, frames kept, damage found (most telling problem first)."""

    decoded: int = 0
    kept: int = 0
    packets: int = 0  # video packets read; with ``skip_unsampled``, packets - decoded frames were left undecoded
    errors: list[str] = field(default_factory=list)
    last_time: float = 0.0


class VideoSource:
    """Decodes one source once; yields :class:`Frame` objects at ``fps`` (None: every frame).

    ``threads``: decoder threads (0: FFmpeg's choice, frame threads on every core: fastest for one file; 1: what a
    live camera needs, see :class:`trustcam.ingest.stream.LiveStream`). ``skip_unsampled``: packets of frames that
    sampling to ``fps`` will drop are not decoded when no other frame refers to them (B-frames, ~40 % of an x264
    stream): the demuxer and packet taps still see every packet, so recording and live video are unaffected, and
    no sampled frame is lost (files: the same frames; live: a frame may come one frame interval later). Off by
    default because damage in a packet that is never decoded is not reported either.
    """

    def __init__(
        self,
        url: str,
        *,
        fps: float | None = None,
        size: tuple[int, int] | None = None,
        timeout_s: float = 10.0,
        rtsp_transport: str = "tcp",
        max_decode_errors: int = 50,
        packet_tap: PacketTap | None = None,
        connection_tap: ConnectionTap | None = None,
        threads: int = 0,
        skip_unsampled: bool = False,
    ) -> None:
        self.url = url
        self.kind = source_kind(url)
        self.threads = threads
        self.skip_unsampled = skip_unsampled
        self.fps = fps
        self.size = size
        self.timeout_s = timeout_s
        self.rtsp_transport = rtsp_transport
        self.max_decode_errors = max_decode_errors
        self.report = DecodeReport()
        self.native_size: tuple[int, int] | None = None
        self.stream_fps: float | None = None
        self._end_media: float | None = None  # media time where the last decoded frame ends (files)
        self._bad_run: _BadRun | None = None  # undecodable packets since the last good frame: one problem
        self._recent_times: deque[float] = deque(maxlen=32)  # file times of the last packets (skip_unsampled)
        self.packet_tap = packet_tap
        self.connection_tap = connection_tap
        self.tap_errors = 0

    @property
    def open_timeout_s(self) -> float:
        """Limit for connecting *and* probing: a live stream is probed by reading ``LIVE_ANALYZE_S`` of it in
        real time, so this is longer than the silence limit ``timeout_s`` that each read gets."""
        if self.kind in ("rtsp", "http"):
            return self.timeout_s + 2 * LIVE_ANALYZE_S
        return self.timeout_s

    def _open(self) -> av.container.InputContainer:
        name = redact(self.url)
        if self.kind == "file" and not _URL_SCHEME.match(self.url):
            path = Path(self.url)
            if not path.exists():
                raise SourceError(f"{name}: file not found; check the path in the camera's 'source'")
            if path.is_dir():
                raise SourceError(f"{name}: is a folder, not a video file; point 'source' at a video")
        if self.kind == "usb" and not Path(self.url).exists():
            raise SourceError(f"{name}: no such video device; is the camera plugged in (ls /dev/video*)?")
        options = ffmpeg_options(self.url, self.timeout_s, self.rtsp_transport)
        fmt = "v4l2" if self.kind == "usb" else None
        limit = self.open_timeout_s
        started = time.monotonic()
        try:
            container = av.open(self.url, mode="r", format=fmt, options=options, timeout=(limit, self.timeout_s))
        except av.error.FileNotFoundError:
            raise SourceError(f"{name}: not found (server answered 404 or the file is missing)") from None
        except PermissionError:
            raise SourceError(f"{name}: permission denied; check who may read it") from None
        except (av.error.InvalidDataError, av.error.EOFError):
            if self.kind == "file":  # EOF: the file ends inside its header or index
                raise SourceError(
                    f"{name}: not a readable video (damaged, truncated before its index, or not a video); "
                    "re-export the file"
                ) from None
            if time.monotonic() - started >= self.timeout_s:
                raise SourceError(f"{name}: no answer within {self.timeout_s:g}s; check the address, "
                                  "network and camera") from None
            raise SourceError(
                f"{name}: the answer is not a video stream; check the URL (path, port) and the camera"
            ) from None
        except (av.error.ExitError, av.error.TimeoutError) as exc:
            waited = limit if isinstance(exc, av.error.ExitError) else self.timeout_s  # PyAV's or FFmpeg's limit
            raise SourceError(f"{name}: no answer within {waited:g}s; check the address, network and camera") from None
        except av.error.ConnectionRefusedError:
            raise SourceError(
                f"{name}: cannot connect (Connection refused); is the camera (or stream server) on, and is "
                "the port right?"
            ) from None
        except av.error.HTTPUnauthorizedError:
            raise SourceError(f"{name}: the camera refused the credentials; check user and password") from None
        except (av.error.FFmpegError, OSError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise SourceError(f"{name}: cannot open ({reason}); check the address, network and camera") from None
        if time.monotonic() - started >= limit:
            # PyAV's timeout cut the probing short; FFmpeg's connection keeps that 'exit' state, so every read
            # would fail: say why now instead of failing on the first read.
            container.close()
            raise SourceError(f"{name}: no usable video within {limit:g}s; check the network and camera")
        if not container.streams.video:
            container.close()
            hint = " (audio only, or the file is damaged)" if self.kind == "file" else ""
            raise SourceError(f"{name}: has no video stream{hint}; point 'source' at a video")
        return container

    def frames(self) -> Iterator[Frame]:
        """Decode until the end of the source; raises :class:`SourceError` when reading fails.

        A damaged file is decoded as far as possible: each problem (undecodable or incomplete data, a file that
        stops before the end its index announces) is added to ``report.errors``; too many raise.
        """
        container = self._open()
        name = redact(self.url)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            ctx = stream.codec_context
            if self.threads:
                ctx.thread_count = self.threads
            self.native_size = (ctx.width, ctx.height)
            rate = stream.average_rate or stream.guessed_rate
            self.stream_fps = float(rate) if rate else None
            step = 1.0 / self.fps if self.fps else 0.0
            next_time: float | None = None
            base: float | None = None
            tap = self.packet_tap
            skipping = self.skip_unsampled and step > 0
            if self.connection_tap is not None:
                self._call_tap(self.connection_tap, stream)
            for packet in self._packets(container, stream, name):
                if packet.size:
                    self.report.packets += 1
                    if tap is not None:
                        self._call_tap(tap, packet, stream)
                if skipping:
                    self._skip_if_unsampled(ctx, packet, base, next_time, step)
                if packet.is_corrupt and self.kind == "file":
                    self._damaged(name, f"incomplete or corrupt data{self._at(packet, base)}")
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError as exc:
                    self._undecodable(name, self._position(packet, base), exc.strerror)
                    continue
                for av_frame in decoded:
                    self._bad_run = None
                    self.report.decoded += 1
                    t = self._frame_time(av_frame)
                    if self.kind == "file":  # file time counts from the first frame; live time is the clock
                        self._end_media = t + (1.0 / self.stream_fps if self.stream_fps else 0.0)
                        base = t if base is None else base
                        t -= base
                    self.report.last_time = t
                    if next_time is not None and t + 1e-6 < next_time:
                        continue
                    next_time = (next_time + step if next_time is not None and step else t + step)
                    if next_time < t:  # after a gap, resync instead of bursting
                        next_time = t + step
                    self.report.kept += 1
                    yield Frame(av_frame, self.report.kept - 1, t, self.size)
            if self.kind == "file":
                self._check_complete(container, stream)
        finally:
            if self.connection_tap is not None:
                self._call_tap(self.connection_tap, None)
            container.close()

    def _skip_if_unsampled(self, ctx: av.codec.context.CodecContext, packet: av.Packet, base: float | None,
                           next_time: float | None, step: float) -> None:
        """Tell the decoder to drop ``packet``'s frame if it is a non-reference frame that sampling will drop."""
        skip = False
        if next_time is not None and packet.size:
            if self.kind == "file":
                t = self._position(packet, base)
                skip = base is not None and t is not None and self._unsampled_file_frame(t, next_time, step)
            else:
                # A live frame's time is the clock when it leaves the decoder, a little after now: one decoded
                # later than predicted may have been the one to keep, and the next frame is kept instead.
                skip = time.time() + 1e-6 < next_time
        mode = "NONREF" if skip else "DEFAULT"
        if ctx.skip_frame != mode:
            ctx.skip_frame = mode

    def _unsampled_file_frame(self, t: float, next_time: float, step: float) -> bool:
        """Whether sampling will drop the file frame at ``t``. Sampling keeps the first frame at or after each point
        ``next_time + k * step``, and ``next_time`` only grows, but lags here: B-frames are decoded before frames
        shown ahead of them. So a frame is dropped for sure before ``next_time``, and after it when no point lies
        between the frame shown before it (its packet came earlier) and itself."""
        recent = self._recent_times
        earlier = max((x for x in recent if x < t - 1e-9), default=None)
        recent.append(t)
        if t + 1e-6 < next_time:
            return True
        if earlier is None:
            return False
        point = next_time + math.floor((t + 1e-6 - next_time) / step) * step  # the last one at or before t
        return point <= earlier + 1e-6

    def _call_tap(self, tap: Callable[..., None], *args: object) -> None:
        """Run a tap; its failure is logged, never raised: recording must not stop analysis. The first error
        of a connection is logged with its traceback, then one line every 1000."""
        try:
            tap(*args)
        except Exception:
            self.tap_errors += 1
            if self.tap_errors == 1:
                log.exception("%s: packet tap failed (analysis goes on)", redact(self.url))
            elif self.tap_errors % 1000 == 0:
                log.error("%s: packet tap failed %d times (analysis goes on)", redact(self.url), self.tap_errors)

    def _packets(
        self, container: av.container.InputContainer, stream: av.VideoStream, name: str
    ) -> Iterator[av.Packet]:
        demux = container.demux(stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                return
            except av.error.EOFError:
                return
            except (av.error.ExitError, av.error.TimeoutError):
                if self.kind == "file":
                    raise SourceError(f"{name}: reading stalled for {self.timeout_s:g}s; is its disk or network "
                                      "share slow or gone?") from None
                raise SourceError(
                    f"{name}: no data for {self.timeout_s:g}s; the camera stopped sending (check its power "
                    "and network)"
                ) from None
            except av.error.FFmpegError as exc:
                if self.kind == "file":
                    self._damaged(name, f"unreadable data after {self.report.last_time:.2f}s ({exc.strerror})")
                    return
                raise SourceError(f"{name}: stream broke ({exc.strerror})") from None
            except OSError as exc:
                raise SourceError(f"{name}: stream broke ({exc})") from None
            yield packet

    def _frame_time(self, av_frame: av.VideoFrame) -> float:
        if self.kind != "file":
            return time.time()
        if av_frame.time is not None:
            return float(av_frame.time)
        return self.report.decoded / (self.stream_fps or 25.0)

    def _position(self, packet: av.Packet, base: float | None) -> float | None:
        """File time of ``packet`` (as frame times count it); None for live sources or unknown times."""
        if self.kind != "file":
            return None
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None or packet.time_base is None:
            return None
        if base is None:
            start = packet.stream.start_time
            base = float(start * packet.time_base) if start is not None else 0.0
        return max(0.0, float(ts * packet.time_base) - base)

    def _at(self, packet: av.Packet, base: float | None) -> str:
        """' at 12.34s' for error messages; empty for live sources."""
        t = self._position(packet, base)
        if t is None:
            return "" if self.kind != "file" else f" after {self.report.last_time:.2f}s"
        return f" at {t:.2f}s"

    def _undecodable(self, name: str, t: float | None, reason: str) -> None:
        """Packets that fail to decode one after another are one damaged stretch, reported once."""
        run = self._bad_run
        if run is None:
            fallback = None if self.kind != "file" else self.report.last_time
            self._bad_run = _BadRun(t if t is not None else fallback, reason, len(self.report.errors))
            self._damaged(name, self._bad_run.describe())
            return
        run.add(t)
        self.report.errors[run.slot] = run.describe()

    def _check_complete(self, container: av.container.InputContainer, stream: av.VideoStream) -> None:
        """A file whose index promises more video than could be read was cut short (an interrupted copy, download
        or recording). FFmpeg just sees an early end of file, so compare with the index, and put this first:
        it explains any error at the end."""
        expected = _indexed_end(container, stream)
        if expected is None:
            return
        interval = 1.0 / self.stream_fps if self.stream_fps else 0.0
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        end = self._end_media if self._end_media is not None else start
        if end < expected - max(1.0, 3 * interval):
            self._bad_run = None  # its slot in report.errors moves
            self.report.errors.insert(
                0,
                f"truncated: the video stops at {end - start:.1f}s of {expected - start:.1f}s "
                "(the file was cut short: an incomplete copy, download or recording)",
            )

    def _damaged(self, name: str, what: str) -> None:
        self.report.errors.append(what)
        if len(self.report.errors) >= self.max_decode_errors:
            raise SourceError(
                f"{name}: too damaged to read ({len(self.report.errors)} errors, last: {what}); "
                "frames before the damage were analysed"
            )


@dataclass
class _BadRun:
    """A stretch of undecodable packets: where it starts and ends (file seconds), how many, and why."""

    first: float | None
    reason: str
    slot: int  # its message's index in DecodeReport.errors
    last: float | None = None
    packets: int = 1

    def __post_init__(self) -> None:
        self.last = self.first

    def add(self, t: float | None) -> None:
        self.packets += 1
        if t is not None:
            self.first = t if self.first is None else min(self.first, t)
            self.last = t if self.last is None else max(self.last, t)

    def describe(self) -> str:
        if self.packets == 1:
            where = f" at {self.first:.2f}s" if self.first is not None else ""
            return f"undecodable packet{where} ({self.reason})"
        where = f" from {self.first:.2f}s to {self.last:.2f}s" if self.first is not None else ""
        return f"undecodable data{where}, {self.packets} packets lost ({self.reason})"


def _indexed_end(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    """Media time where the video should end according to the file's index; None where the format has no
    trustworthy one (raw or streamed formats only have estimates)."""
    formats = set(container.format.name.split(","))
    if formats & {"mov", "mp4"} and stream.duration and stream.time_base:
        start = stream.start_time or 0
        return float((start + stream.duration) * stream.time_base)
    if "matroska" in formats and len(container.streams) == 1 and container.duration:
        return ((container.start_time or 0) + container.duration) / 1_000_000
    return None
