"""Recordings timeline of one camera (what was recorded, what is missing and why, what happened) and the signed
evidence export of a time range.

A camera not granted to the caller answers exactly like one that does not exist (same status and body, only the
name it sent differs), on both routes, so nobody learns which cameras exist.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from trustcam.config.schema import NAME_PATTERN
from trustcam.security.roles import Role
from trustcam.storage.schema import EventRow, SegmentRow
from trustcam.storage.vault import VaultError
from trustcam.vision.privacy import export_refusal, redaction
from trustcam.web.auth import Principal, audit, require
from trustcam.web.context import AppContext, Ctx
from trustcam.web.models import ApiModel

router = APIRouter(tags=["timeline"])
Viewer = Annotated[Principal, Depends(require(Role.viewer, Role.operator, Role.admin))]
Operator = Annotated[Principal, Depends(require(Role.operator, Role.admin))]
CameraName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=63, description="Camera name from the config.")]
TIME_HELP = "ISO 8601 (no zone: UTC) or epoch seconds."
MAX_TIMELINE_S = 7 * 86400.0  # a week of segment rows is still a small answer
MAX_EXPORT_S = 86400.0  # a bundle is built in memory: one day at most (and evidence.MAX_RANGE_BYTES of video)
DEFAULT_SPAN_S = 86400.0
JOIN_S = 1.0  # segments closer than this count as contiguous (cuts at keyframes leave sub-second seams)
MAX_EVENTS = 1000
MAX_ALERTS = 500
NO_CAMERA = "no camera '{}'; GET /api/cameras lists the cameras you can see"


class Segment(ApiModel):
    seq: int = Field(description="Position in the camera's hash chain.")
    start: float = Field(description="Epoch seconds.")
    end: float


class Span(ApiModel):
    start: float = Field(description="Epoch seconds, clipped to the requested range.")
    end: float


class Gap(ApiModel):
    start: float = Field(description="Epoch seconds, clipped to the requested range (and to now).")
    end: float
    reason: Literal["not recorded", "evicted", "shredded"] = Field(
        description="not recorded: no segment exists; evicted: deleted for disk space; shredded: deleted by "
                    "retention or by hand (its hash stays in the chain).")
    detail: str | None = Field(description="The deletion reason the vault recorded, or null.")


class EventMark(ApiModel):
    id: str
    label: str
    start: float
    end: float
    threat: str


class AlertMark(ApiModel):
    id: str
    kind: str
    severity: str
    message: str
    time: float
    test: bool = Field(description="A canary self-test alert.")


class TimelineOut(ApiModel):
    camera: str
    start: float = Field(description="The requested range, epoch seconds.")
    end: float
    segments: list[Segment] = Field(description="Recorded segments still available, in chain order.")
    spans: list[Span] = Field(description="The segments merged into contiguous recorded stretches.")
    gaps: list[Gap] = Field(description="Everything in the range (up to now) without available footage.")
    events: list[EventMark] = Field(description=f"Events overlapping the range, by start (first {MAX_EVENTS}).")
    events_truncated: bool = Field(description=f"More than {MAX_EVENTS} events overlap the range.")
    alerts: list[AlertMark] = Field(description="Recent alerts of the camera in the range (kept in memory since "
                                    "the server started).")


Start = Annotated[datetime | None, Query(description=f"Range start; {TIME_HELP} Default: end minus one day.")]
End = Annotated[datetime | None, Query(description=f"Range end; {TIME_HELP} Default: now.")]
RequiredStart = Annotated[datetime, Query(description=f"Range start; {TIME_HELP}")]
RequiredEnd = Annotated[datetime, Query(description=f"Range end; {TIME_HELP}")]


def _camera(ctx: AppContext, principal: Principal, name: str) -> None:
    """A camera not granted and one not configured share one 404, byte for byte apart from the name."""
    if not principal.can_see(name) or name not in ctx.settings.cameras:
        raise HTTPException(404, NO_CAMERA.format(name))


def _epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _range(start: datetime | None, end: datetime | None, limit_s: float) -> tuple[float, float]:
    """The range in epoch seconds; 422 naming the fix when it is inverted or longer than ``limit_s``."""
    finish = _epoch(end) if end is not None else time.time()
    begin = _epoch(start) if start is not None else finish - DEFAULT_SPAN_S
    if finish <= begin:
        raise HTTPException(422, "invalid range: end must be after start; pass start < end (ISO 8601 or epoch s)")
    if finish - begin > limit_s:
        raise HTTPException(422, f"range too long: {(finish - begin) / 3600:.1f} h, at most {limit_s / 3600:g} h "
                                 "here; ask for a shorter range")
    return begin, finish


def _reason(deletion: str | None) -> Literal["evicted", "shredded"]:
    """Disk-space eviction (retention.evict_for_space) versus every other deletion (retention, by hand)."""
    return "evicted" if (deletion or "").startswith("evicted") else "shredded"


def _add_gap(gaps: list[dict[str, Any]], start: float, end: float, reason: str, detail: str | None) -> None:
    if end <= start:
        return
    last = gaps[-1] if gaps else None
    if last and (last["reason"], last["detail"]) == (reason, detail) and start - last["end"] <= JOIN_S:
        last["end"] = max(last["end"], end)
    else:
        gaps.append({"start": start, "end": end, "reason": reason, "detail": detail})


def _cover(rows: list[SegmentRow], start: float, end: float, horizon: float
           ) -> tuple[list[Segment], list[Span], list[Gap]]:
    """Segments, contiguous recorded spans and the gaps between them, clipped to [start, min(end, horizon)]."""
    segments: list[Segment] = []
    spans: list[dict[str, float]] = []
    gaps: list[dict[str, Any]] = []
    cursor = start  # everything before it is accounted for
    for row in rows:
        begin, finish = max(row.start, start), min(row.end, end)
        if begin - cursor > JOIN_S:
            _add_gap(gaps, cursor, begin, "not recorded", None)
        if row.wrapped_key is not None:
            segments.append(Segment(seq=row.seq, start=row.start, end=row.end))
            if spans and begin - spans[-1]["end"] <= JOIN_S:
                spans[-1]["end"] = max(spans[-1]["end"], finish)
            else:
                spans.append({"start": begin, "end": finish})
        else:
            _add_gap(gaps, begin, finish, _reason(row.deletion_reason), row.deletion_reason)
        cursor = max(cursor, finish)
    stop = min(end, horizon)
    if stop - cursor > JOIN_S:
        _add_gap(gaps, cursor, stop, "not recorded", None)
    return segments, [Span(**s) for s in spans], [Gap(**g) for g in gaps]


def _events(ctx: AppContext, camera: str, start: float, end: float) -> tuple[list[EventMark], bool]:
    with Session(ctx.engine) as session:
        rows = list(session.scalars(select(EventRow).where(
            EventRow.camera == camera, EventRow.start < end, EventRow.end > start)
            .order_by(EventRow.start, EventRow.id).limit(MAX_EVENTS + 1)))
    marks = [EventMark(id=r.id, label=r.label, start=r.start, end=r.end, threat=r.threat) for r in rows]
    return marks[:MAX_EVENTS], len(marks) > MAX_EVENTS


def _alerts(ctx: AppContext, camera: str, start: float, end: float) -> list[AlertMark]:
    recent = ctx.alerts.recent(10_000) if ctx.alerts is not None else []
    marks = [AlertMark(id=a.id, kind=a.kind, severity=a.severity.value, message=a.message, time=a.time, test=a.test)
             for a in recent if a.camera == camera and start <= a.time <= end]
    return sorted(marks, key=lambda m: m.time)[-MAX_ALERTS:]


@router.get("/api/cameras/{name}/timeline", response_model=TimelineOut,
            summary="Recordings timeline: recorded spans, gaps with their reason, events and alerts of a range")
def timeline(name: CameraName, ctx: Ctx, principal: Viewer, start: Start = None, end: End = None) -> TimelineOut:
    _camera(ctx, principal, name)
    begin, finish = _range(start, end, MAX_TIMELINE_S)
    with Session(ctx.engine) as session:
        rows = list(session.scalars(select(SegmentRow).where(
            SegmentRow.camera == name, SegmentRow.start < finish, SegmentRow.end > begin).order_by(SegmentRow.seq)))
    segments, spans, gaps = _cover(rows, begin, finish, time.time())
    events, truncated = _events(ctx, name, begin, finish)
    return TimelineOut(camera=name, start=begin, end=finish, segments=segments, spans=spans, gaps=gaps,
                       events=events, events_truncated=truncated, alerts=_alerts(ctx, name, begin, finish))


def _stamp(seconds: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(seconds))


@router.post("/api/cameras/{name}/export", response_model=None,
             summary="Signed evidence bundle (ZIP) of a camera's footage in a time range",
             responses={200: {"content": {"application/zip": {}}}})
async def export_range(request: Request, name: CameraName, ctx: Ctx, principal: Operator, start: RequiredStart,
                       end: RequiredEnd) -> Response:
    """Same bundle and checks as an event export; built in memory and streamed, never written to disk."""
    from trustcam.storage.evidence import build_range_bundle

    _camera(ctx, principal, name)
    begin, finish = _range(start, end, MAX_EXPORT_S)
    span = {"start": begin, "end": finish}
    if view := redaction(principal, ctx.settings.cameras[name]):
        audit(request, principal, "export_range", name, outcome="refused", camera=name, reason=view.reason, **span)
        raise HTTPException(403, export_refusal(name, view))
    if ctx.vault is None:
        audit(request, principal, "export_range", name, outcome="refused", camera=name, reason="no vault", **span)
        raise HTTPException(409, "no footage to export: recording is not enabled (set cameras.<name>.record.enabled "
                                 "and restart)")
    try:
        data = await run_in_threadpool(build_range_bundle, ctx.vault, ctx.engine, name, begin, finish)
    except VaultError as exc:
        audit(request, principal, "export_range", name, outcome="failed", camera=name, reason=str(exc), **span)
        raise HTTPException(409, str(exc)) from None
    bundle = f"{name}-{_stamp(begin)}-{_stamp(finish)}.zip"
    audit(request, principal, "export_range", name, camera=name, bundle=bundle, size=len(data), **span)
    headers = {"Content-Disposition": f'attachment; filename="{bundle}"', "Cache-Control": "no-store"}
    return Response(data, media_type="application/zip", headers=headers)
