"""Open a camera or file with FFmpeg (PyAV) and decode frames, sampled to the analysis rate.

One :class:`VideoSource` is one connection. Failures become :class:`SourceError` with a message naming the
source (credentials hidden), what went wrong and what to check; reconnecting is :mod:`trustcam.ingest.stream`'s job.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import av

from trustcam.ingest.frame import Frame

SourceKind = Literal["rtsp", "http", "file", "usb"]


class SourceError(Exception):
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
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def ffmpeg_options(url: str, timeout_s: float, rtsp_transport: str = "tcp") -> dict[str, str]:
    """FFmpeg demuxer options so that a dead camera fails within ``timeout_s`` instead of hanging forever."""
    micros = str(int(timeout_s * 1_000_000))
    kind = source_kind(url)
    if kind == "rtsp":
        return {"rtsp_transport": rtsp_transport, "timeout": micros, "fflags": "nobuffer"}
    if kind == "http":
        return {"rw_timeout": micros, "reconnect": "0"}
    return {}


@dataclass
class DecodeReport:
    """What one pass over a source did: frames seen, frames kept, damage found."""

    decoded: int = 0
    kept: int = 0
    errors: list[str] = field(default_factory=list)
    last_time: float = 0.0


class VideoSource:
    """Decodes one source once; yields :class:`Frame` objects at ``fps`` (None: every frame)."""

    def __init__(
        self,
        url: str,
        *,
        fps: float | None = None,
        size: tuple[int, int] | None = None,
        timeout_s: float = 10.0,
        rtsp_transport: str = "tcp",
        max_decode_errors: int = 50,
    ) -> None:
        self.url = url
        self.kind = source_kind(url)
        self.fps = fps
        self.size = size
        self.timeout_s = timeout_s
        self.rtsp_transport = rtsp_transport
        self.max_decode_errors = max_decode_errors
        self.report = DecodeReport()
        self.native_size: tuple[int, int] | None = None
        self.stream_fps: float | None = None

    def _open(self) -> av.container.InputContainer:
        name = redact(self.url)
        if self.kind == "file" and not Path(self.url).exists():
            raise SourceError(f"{name}: file not found; check the path in the camera's 'source'")
        if self.kind == "usb" and not Path(self.url).exists():
            raise SourceError(f"{name}: no such video device; is the camera plugged in (ls /dev/video*)?")
        options = ffmpeg_options(self.url, self.timeout_s, self.rtsp_transport)
        fmt = "v4l2" if self.kind == "usb" else None
        try:
            container = av.open(self.url, mode="r", format=fmt, options=options, timeout=self.timeout_s)
        except av.error.FileNotFoundError:
            raise SourceError(f"{name}: not found (server answered 404 or the file is missing)") from None
        except av.error.InvalidDataError:
            raise SourceError(
                f"{name}: not a readable video (damaged, truncated before its index, or not a video); "
                "re-export the file or check the camera's stream URL"
            ) from None
        except av.error.ExitError as exc:
            raise SourceError(f"{name}: cannot connect ({exc.strerror}); check the address and the camera") from None
        except av.error.HTTPUnauthorizedError:
            raise SourceError(f"{name}: the camera refused the credentials; check user and password") from None
        except (av.error.FFmpegError, OSError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise SourceError(f"{name}: cannot open ({reason}); check the address, network and camera") from None
        if not container.streams.video:
            container.close()
            raise SourceError(f"{name}: has no video stream; point 'source' at a video")
        return container

    def frames(self) -> Iterator[Frame]:
        """Decode until the end of the source; raises :class:`SourceError` when reading fails."""
        container = self._open()
        name = redact(self.url)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            ctx = stream.codec_context
            self.native_size = (ctx.width, ctx.height)
            rate = stream.average_rate or stream.guessed_rate
            self.stream_fps = float(rate) if rate else None
            step = 1.0 / self.fps if self.fps else 0.0
            next_time: float | None = None
            base: float | None = None
            for packet in self._packets(container, stream, name):
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError as exc:
                    self._damaged(name, f"undecodable packet at {self.report.last_time:.2f}s ({exc.strerror})")
                    continue
                for av_frame in decoded:
                    self.report.decoded += 1
                    t = self._frame_time(av_frame)
                    if self.kind == "file":  # file time counts from the first frame; live time is the clock
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
        finally:
            container.close()

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

    def _damaged(self, name: str, what: str) -> None:
        self.report.errors.append(what)
        if len(self.report.errors) >= self.max_decode_errors:
            raise SourceError(
                f"{name}: too damaged to read ({len(self.report.errors)} errors, last: {what}); "
                "frames before the damage were analysed"
            )
