"""Recorded footage for the browser, as one MP4 that a ``<video>`` element plays and seeks with HTTP range requests:
an event's clip (pre/post capture included), and a camera's recording between two times (the timeline player).

The clip is decrypted and joined in memory and never written to disk. A browser asks for many ranges of one
clip, so built clips are kept briefly in a small in-memory LRU (:class:`ClipCache`) instead of decrypting the
footage again for every range; each build is one audited view. Access is that of the event or camera itself: an
event or camera the user may not see answers exactly like a missing one.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from trustcam.storage.evidence import decrypt_segment, remux_segments
from trustcam.storage.schema import EventRow, SegmentRow
from trustcam.storage.vault import VaultError
from trustcam.vision.privacy import ORIGINAL, Redaction, redact_video, redaction
from trustcam.web.auth import Principal, audit
from trustcam.web.context import AppContext, Ctx
from trustcam.web.routers.events import EventId, Viewer, _event
from trustcam.web.routers.timeline import CameraName, RequiredEnd, RequiredStart, _camera, _range

router = APIRouter(tags=["events"])

DEFAULT_MARGIN_S = 5.0  # pre/post capture for a camera no longer in the config
MAX_CLIP_BYTES = 256 * 1024 * 1024  # a clip is held in memory: longer events are for the evidence export
CACHE_CLIPS, CACHE_TTL_S = 4, 60.0
MAX_RECORDING_S = 1800.0  # one player window: the timeline asks for the next one when it ends
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class Clip:
    data: bytes
    etag: str
    segments: int
    start: float  # covered footage, epoch seconds
    end: float
    fps: float | None = None  # frame rate of the video, for frame stepping (None: not known)


class ClipCache:
    """Recently built clips by event id: at most ``size`` of them, each for ``ttl_s``. Concurrent requests for a
    clip being built wait for that build (one decryption, one audit entry) instead of starting their own."""

    def __init__(self, size: int = CACHE_CLIPS, ttl_s: float = CACHE_TTL_S) -> None:
        self.size, self.ttl_s = size, ttl_s
        self._clips: OrderedDict[str, tuple[float, Clip]] = OrderedDict()
        self._building: dict[str, Future[Clip]] = {}
        self._lock = threading.Lock()

    def get_or_build(self, key: str, build: Callable[[], Clip]) -> tuple[Clip, bool]:
        """The cached clip, or the one ``build`` makes now; True when this call built it."""
        with self._lock:
            now = time.monotonic()
            for stale in [k for k, (at, _) in self._clips.items() if now - at > self.ttl_s]:
                del self._clips[stale]
            if key in self._clips:
                self._clips.move_to_end(key)
                return self._clips[key][1], False
            pending = self._building.get(key)
            if pending is None:
                pending = self._building[key] = Future()
                owner = True
            else:
                owner = False
        if not owner:
            return pending.result(), False
        try:
            clip = build()
        except BaseException as exc:
            pending.set_exception(exc)
            raise
        finally:
            with self._lock:
                del self._building[key]
        with self._lock:
            self._clips[key] = (time.monotonic(), clip)
            while len(self._clips) > self.size:
                self._clips.popitem(last=False)
        pending.set_result(clip)
        return clip, True


def clip_cache(ctx: AppContext) -> ClipCache:
    """The app's clip cache (per app: two apps in one process never share decrypted footage)."""
    with _cache_lock:
        return ctx.extras.setdefault("clip_cache", ClipCache())  # type: ignore[no-any-return]


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _window(ctx: AppContext, row: EventRow) -> tuple[float, float]:
    """The event with the camera's pre/post capture around it: the footage a reviewer needs for context."""
    camera = ctx.settings.cameras.get(row.camera)
    if camera is None:
        return row.start - DEFAULT_MARGIN_S, row.end + DEFAULT_MARGIN_S
    return row.start - camera.record.pre_capture_s, row.end + camera.record.post_capture_s


def _no_footage(ctx: AppContext, camera_name: str, start: float, end: float, rows: list[SegmentRow],
                subject: str) -> str:
    """Why there is nothing to play (``subject``: "of this event", "in this time range"), and what would change
    that. ``rows`` are the segments overlapping the range, deleted ones included."""
    camera = ctx.settings.cameras.get(camera_name)
    if rows:
        last = max(rows, key=lambda s: s.deleted_at or 0)
        return (f"no footage: the recording {subject} was deleted on {_when(last.deleted_at or 0)} "
                f"({last.deletion_reason}); it cannot be played any more")
    if camera is not None and not camera.record.enabled:
        return (f"no footage: recording is disabled for camera '{camera_name}' (set cameras.{camera_name}.record."
                "enabled: true to record from now on)")
    what = {"continuous": "it records every segment, so it was not recording then (stopped, or disconnected)",
            "motion": "it keeps only segments with motion (record.mode: motion) and kept none then",
            "events": "it keeps segments around events (record.mode: events): the footage is not written yet "
                      "(a segment is stored when it closes) or was not recorded"}
    mode = camera.record.mode if camera is not None else None
    return (f"no footage: no recorded segment of camera '{camera_name}' covers {_when(start)} to {_when(end)}; "
            + (what[mode] if mode else "the camera is no longer configured") + ", or retention deleted it")


def _footage(ctx: AppContext, camera: str, start: float, end: float, subject: str) -> list[SegmentRow]:
    """The available segments of ``camera`` overlapping [start, end], in chain order; 404 with the reason when
    there are none (no vault, recording off, deleted, none kept in that mode)."""
    if ctx.vault is None:
        enabled = [n for n, c in ctx.settings.cameras.items() if c.record.enabled]
        raise HTTPException(404, "no footage: the evidence vault is not open in this process"
                                 + ("" if enabled else " (no camera records: set cameras.<name>.record.enabled: true"
                                                       " and restart)"))
    rows = ctx.vault.segments_between(camera, start, end, include_shredded=True)
    live = [r for r in rows if r.wrapped_key is not None]
    if not live:
        raise HTTPException(404, _no_footage(ctx, camera, start, end, rows, subject))
    return live


def _clip_bytes(ctx: AppContext, segments: list[SegmentRow], view: Redaction = ORIGINAL) -> bytes:
    """The one place clip bytes are produced, for every route that plays footage: the segments decrypted and joined
    into one fragmented MP4, in memory; with a ``view`` to apply: decoded, the camera's privacy masks filled black
    and/or faces blurred, re-encoded (a derived view; the vault keeps the original)."""
    assert ctx.vault is not None  # _footage checked it
    data = remux_segments([decrypt_segment(ctx.vault, r) for r in segments], fragmented=True)
    return redact_video(data, view) if view else data


def _frame_rate(data: bytes) -> float | None:
    """The clip's video frame rate, read from its header (frame stepping in the player); None when unknown."""
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            return round(float(rate), 3) if rate else None
    except Exception:  # PyAV raises many types; the rate is a convenience, never a reason to refuse the clip
        return None


def build_clip(ctx: AppContext, segments: list[SegmentRow], view: Redaction = ORIGINAL) -> Clip:
    """Join ``segments`` (chain order, all available) into one playable clip; bounded in size (held in memory)."""
    size = sum(r.size for r in segments)
    if size > MAX_CLIP_BYTES:
        raise HTTPException(413, f"this footage is {size >> 20} MiB, more than the {MAX_CLIP_BYTES >> 20} MiB the "
                                 "browser player serves from memory; ask for a shorter time, or an operator can "
                                 "export it as evidence")
    try:
        data = _clip_bytes(ctx, segments, view)
    except VaultError as exc:
        raise HTTPException(410, f"footage not readable: {exc}") from None
    except Exception as exc:  # PyAV raises many types: segments that do not join (codec changed mid-way)
        raise HTTPException(409, f"the segments could not be joined into one clip ({exc}); an operator can export "
                                 "them as evidence, one file per segment") from None
    return Clip(data, f'"{hashlib.sha256(data).hexdigest()[:32]}"', len(segments), segments[0].start,
                segments[-1].end, _frame_rate(data))


def _build(ctx: AppContext, row: EventRow, view: Redaction = ORIGINAL) -> Clip:
    """The event's window of footage (pre/post capture included) as one clip."""
    start, end = _window(ctx, row)
    return build_clip(ctx, _footage(ctx, row.camera, start, end, "of this event"), view)


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte of a one-range ``Range`` header; None for several ranges (answered whole,
    as RFC 9110 allows). Raises 416 for a malformed or unsatisfiable range."""
    if "," in header:
        return None
    found = _RANGE.fullmatch(header.strip())
    if found is not None and found.group(1):
        first = int(found.group(1))
        last = min(int(found.group(2)), size - 1) if found.group(2) else size - 1
        if first < size and first <= last:
            return first, last
    elif found is not None and found.group(2) and int(found.group(2)) > 0 and size > 0:  # suffix: the last N
        return max(0, size - int(found.group(2))), size - 1
    raise HTTPException(416, f"range '{header[:80]}' is not satisfiable: the clip has {size} bytes (use "
                             "bytes=FIRST-LAST, bytes=FIRST- or bytes=-COUNT)",
                        headers={"Content-Range": f"bytes */{size}"})


def clip_response(request: Request, clip: Clip) -> Response:
    """The whole clip (200) or the one range asked for (206), with what a media element needs to seek."""
    size = len(clip.data)
    headers = {"Accept-Ranges": "bytes", "ETag": clip.etag, "Content-Disposition": "inline",
               "X-Footage-Start": f"{clip.start:.3f}", "X-Footage-End": f"{clip.end:.3f}"}
    if clip.fps:
        headers["X-Footage-Fps"] = f"{clip.fps:g}"
    header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    span = byte_range(header, size) if header and (if_range is None or if_range == clip.etag) else None
    if span is None:
        return Response(clip.data, media_type="video/mp4", headers=headers)
    first, last = span
    headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return Response(clip.data[first:last + 1], status_code=206, media_type="video/mp4", headers=headers)


@router.get("/api/events/{event_id}/clip.mp4", response_class=Response,
            summary="The event's footage (pre/post capture included) as one MP4, with range requests",
            responses={200: {"content": {"video/mp4": {}}}, 206: {"description": "The range asked for"},
                       404: {"description": "No such event, or no footage, with the reason"},
                       416: {"description": "Range not satisfiable"}})
async def event_clip(request: Request, event_id: EventId, ctx: Ctx, principal: Viewer) -> Response:
    row = _event(ctx, principal, event_id)
    view = redaction(principal, ctx.settings.cameras.get(row.camera))  # cached apart: never served to another
    key = f"{row.id}:{view.key}"
    clip, built = await run_in_threadpool(clip_cache(ctx).get_or_build, key, lambda: _build(ctx, row, view))
    if built:
        _audit_view(request, principal, row, clip)
    return clip_response(request, clip)


def _audit_view(request: Request, principal: Principal, row: EventRow, clip: Clip) -> None:
    audit(request, principal, "view_clip", f"event:{row.id}", camera=row.camera, segments=clip.segments,
          size=len(clip.data), start=clip.start, end=clip.end)


@router.get("/api/cameras/{name}/recording.mp4", response_class=Response, tags=["timeline"],
            summary="A camera's recorded footage between two times (at most 30 min) as one MP4, with range requests",
            responses={200: {"content": {"video/mp4": {}}}, 206: {"description": "The range asked for"},
                       404: {"description": "No such camera, or no footage in the range, with the reason"},
                       416: {"description": "Range not satisfiable"},
                       422: {"description": "Range inverted or longer than 30 min"}})
async def camera_recording(request: Request, name: CameraName, ctx: Ctx, principal: Viewer, start: RequiredStart,
                           end: RequiredEnd) -> Response:
    """Every available segment overlapping [start, end], whole (the clip may begin a little before ``start``):
    ``X-Footage-Start`` is the wall-clock time of the clip's first frame, so the player maps ``currentTime`` to a
    time of day."""
    _camera(ctx, principal, name)
    begin, finish = _range(start, end, MAX_RECORDING_S)
    clip, built = await run_in_threadpool(_recording, ctx, principal, name, begin, finish)
    if built:
        audit(request, principal, "view_recording", name, camera=name, segments=clip.segments,
              size=len(clip.data), start=clip.start, end=clip.end)
    return clip_response(request, clip)


def _recording(ctx: AppContext, principal: Principal, camera: str, start: float, end: float) -> tuple[Clip, bool]:
    """The cached clip of exactly these segments for this user (each user's first view is audited), or a new one."""
    segments = _footage(ctx, camera, start, end, "in this time range")
    view = redaction(principal, ctx.settings.cameras.get(camera))
    key = f"recording:{principal.username}:{view.key}:{camera}:" + ",".join(r.id for r in segments)
    return clip_cache(ctx).get_or_build(key, lambda: build_clip(ctx, segments, view))
