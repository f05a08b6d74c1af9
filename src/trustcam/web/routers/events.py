"""Events: list and filter, one event with its review state, its snapshot, acknowledge, review, export evidence.

Viewers only ever see events of the cameras granted to them; an event of another camera answers exactly like
one that does not exist (the same 404, byte for byte).
"""

from __future__ import annotations

import functools
import json
import time
from collections import namedtuple
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NamedTuple

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import Field
from pydantic_core import to_json
from sqlalchemy import Float, Integer, Row, Select, Text, bindparam, cast, func, select
from sqlalchemy.orm import Session

from trustcam.security.roles import Role
from trustcam.storage.reviews import Reviews, ReviewState, Verdict, review_states, reviewed_clause
from trustcam.storage.schema import EventRow
from trustcam.storage.vault import VaultError
from trustcam.vision.privacy import export_refusal, redact_jpeg, redaction
from trustcam.web.auth import Principal, audit, require, require_camera
from trustcam.web.context import AppContext, Ctx
from trustcam.web.models import ApiModel

router = APIRouter(tags=["events"])
Viewer = Annotated[Principal, Depends(require(Role.viewer, Role.operator, Role.admin))]
Operator = Annotated[Principal, Depends(require(Role.operator, Role.admin))]
EventId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Event id.")]


class ReviewRequest(ApiModel):
    verdict: Verdict = Field(description="true_positive: a real object of that label; false_positive: not.")
    note: str | None = Field(None, max_length=1000, description="Free text kept with the verdict.")


# An events page's rows as plain named tuples: reading a SQLAlchemy Row's attribute costs ~0.3 µs, ten times a
# tuple's, and event_json reads twenty per event (a third of a page's time before this).
EventRecord = namedtuple("EventRecord", [column.name for column in EventRow.__table__.columns])  # type: ignore[misc]


def event_json(row: EventRow | Row[Any] | EventRecord, state: ReviewState, biometrics: bool = False) -> dict[str, Any]:
    """One event as the API answers it; identities (``sub_label``, the face distance and margin: face recognition's
    name, "unknown face" or "erased", the distance to the match and the margin to the next identity) only to users
    with the ``biometrics`` permission (null for everyone else, whatever the role). One dict literal: a page builds
    up to 500 of these, and merging partial dicts cost as much as the rest."""
    return {
        "id": row.id, "camera": row.camera, "label": row.label, "track_id": row.track_id, "start": row.start,
        "end": row.end, "best_score": row.best_score, "box": row.box, "zones": row.zones, "rules": row.rules,
        "threat": row.threat, "has_snapshot": bool(row.snapshot), "held": bool(row.held),
        "model": {"name": row.model_name, "sha256": row.model_sha256},
        "seen_by": row.seen_by,  # with detector.second_opinion: primary, secondary or both (null: not checked)
        "sub_label": getattr(row, "sub_label", None) if biometrics else None,
        "face_distance": getattr(row, "face_distance", None) if biometrics else None,
        "face_margin": getattr(row, "face_margin", None) if biometrics else None,
        "acknowledged": state.acknowledged, "review": state.review,
    }


NO_EVENT = "no such event (or not on a camera you may see); GET /api/events lists yours"


def _event(ctx: AppContext, principal: Principal, event_id: str) -> EventRow:
    """The event, or the one 404 that a missing event and an event of a camera not granted share: same status,
    body and headers, so no route tells a viewer which ids (or cameras) exist."""
    with Session(ctx.engine, expire_on_commit=False) as session:
        row = session.get(EventRow, event_id)
    if row is None or not principal.can_see(row.camera):
        raise HTTPException(404, NO_EVENT)
    return row


@router.get("/api/events", summary="Events, newest first, with filters and pagination",
            response_model=dict[str, Any])
async def list_events(
    request: Request,
    principal: Viewer,
    camera: Annotated[str | None, Query(max_length=63, description="Only this camera.")] = None,
    label: Annotated[str | None, Query(max_length=32, description="Only this object label (e.g. person).")] = None,
    since: Annotated[float | None, Query(allow_inf_nan=False, description="Start at or after (epoch s).")] = None,
    until: Annotated[float | None, Query(allow_inf_nan=False, description="Events starting before (epoch s).")] = None,
    reviewed: Annotated[bool | None, Query(description="true: with a verdict; false: without.")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="Events skipped.")] = 0,
) -> Response:
    # Async, with the database work in one worker thread and the answer serialised there by pydantic-core: as a sync
    # route it took three thread hops more (the context dependency, the route, validating the dict against
    # dict[str, Any]) for the same bytes. The most-asked route of the UI and of integrations (bench/web_api.py).
    # (A comment, not a docstring: FastAPI would publish a docstring as the operation's description.)
    if camera is not None:
        require_camera(principal, camera)
    shape = _PageShape(camera is not None, principal.cameras is not None, label is not None, since is not None,
                       until is not None, reviewed)
    params = {"camera": camera, "cameras": sorted(principal.cameras or ()), "label": label, "since": since,
              "until": until, "limit": limit, "offset": offset}
    ctx: AppContext = request.app.state.ctx
    body = await run_in_threadpool(_events_page, ctx, shape, params, principal.biometrics)
    return Response(body, media_type="application/json")


class _PageShape(NamedTuple):
    """Which filters a page request uses (their values are bound parameters): the key of its prepared queries."""

    camera: bool
    cameras: bool  # the principal is limited to the cameras granted to them
    label: bool
    since: bool
    until: bool
    reviewed: bool | None


_JSON_COLUMNS = ("box", "zones", "rules")


@functools.lru_cache(maxsize=128)  # at most 2**5 * 3 shapes
def _page_queries(shape: _PageShape) -> tuple[Select[Any], Select[Any]]:
    """The count and page queries of a shape, built once: building them cost more per request than running them.
    The JSON columns are read as text and decoded per page (:func:`_decode_json_columns`)."""
    conditions: list[Any] = []
    if shape.camera:
        conditions.append(EventRow.camera == bindparam("camera"))
    if shape.cameras:
        conditions.append(EventRow.camera.in_(bindparam("cameras", expanding=True)))
    if shape.label:
        conditions.append(EventRow.label == bindparam("label"))
    if shape.since:
        conditions.append(EventRow.start >= bindparam("since", type_=Float))
    if shape.until:
        conditions.append(EventRow.start < bindparam("until", type_=Float))
    if shape.reviewed is not None:
        conditions.append(reviewed_clause(shape.reviewed))
    columns = [cast(c, Text).label(c.name) if c.name in _JSON_COLUMNS else c for c in EventRow.__table__.columns]
    count = select(func.count()).select_from(EventRow).where(*conditions)
    page = (select(*columns).where(*conditions).order_by(EventRow.start.desc(), EventRow.id)
            .limit(bindparam("limit", type_=Integer)).offset(bindparam("offset", type_=Integer)))
    return count, page


def _decode_json_columns(rows: Sequence[EventRecord]) -> list[Any]:
    """Every row's box, zones and rules, in that order, decoded with one json.loads for the page instead of one per
    value (150 calls for a page of 50 cost a third of the page). The texts are what the JSON type wrote (one JSON
    value each); should one not be, the count differs and each is decoded alone, failing as the JSON type did."""
    texts = ["null" if text is None else text for row in rows for text in (row.box, row.zones, row.rules)]
    try:
        values = json.loads(f"[{','.join(texts)}]")
    except ValueError:
        values = None
    if not isinstance(values, list) or len(values) != len(texts):
        values = [json.loads(text) for text in texts]
    return values


def _events_page(ctx: AppContext, shape: _PageShape, params: dict[str, Any], biometrics: bool) -> bytes:
    """The page as JSON bytes: its total, its rows and their review states, read on one pooled connection. Plain
    rows, not ORM objects: nothing is changed or lazily loaded, and building mapped instances cost more than the
    indexed queries themselves (ix_events_*_start_id keep both to an index walk)."""
    count, page = _page_queries(shape)
    with ctx.engine.connect() as connection:
        total = connection.scalar(count, params) or 0
        rows = [EventRecord._make(row) for row in connection.execute(page, params)]
        states = review_states(connection, [row.id for row in rows])
    values = iter(_decode_json_columns(rows))
    events = []
    for row in rows:
        event = event_json(row, states[row.id], biometrics)
        event["box"], event["zones"], event["rules"] = next(values), next(values), next(values)
        events.append(event)
    return to_json({"events": events, "total": total})


@router.get("/api/events/{event_id}", summary="One event with its review state and review history")
def get_event(event_id: EventId, ctx: Ctx,
              principal: Viewer) -> dict[str, Any]:
    row = _event(ctx, principal, event_id)
    reviews = Reviews(ctx.engine)
    return dict(event_json(row, reviews.states([row.id])[row.id], principal.biometrics),
                history=reviews.history(row.id))


def _read_snapshot(ctx: AppContext, ref: str) -> bytes:
    if ref.endswith(".blob"):
        if ctx.vault is None:
            raise HTTPException(409, "this snapshot is encrypted in the vault, which is not open in this process")
        try:
            return ctx.vault.read_blob(ref)
        except (VaultError, OSError) as exc:
            raise HTTPException(410, f"snapshot not readable: {exc}") from None
    path = Path(ref).resolve()
    root = (ctx.settings.data_dir / "snapshots").resolve()
    if not path.is_relative_to(root):  # never serve a file outside the snapshot folder, whatever the row says
        raise HTTPException(410, "snapshot is outside the snapshot folder; not served")
    try:
        return path.read_bytes()
    except OSError:
        raise HTTPException(410, "snapshot file is gone (deleted by retention?)") from None


@router.get("/api/events/{event_id}/snapshot.jpg", response_class=Response, summary="The event's snapshot",
            responses={200: {"content": {"image/jpeg": {}}}})
async def event_snapshot(request: Request, event_id: EventId, ctx: Ctx,
                         principal: Viewer) -> Response:
    row = _event(ctx, principal, event_id)
    if not row.snapshot:
        raise HTTPException(404, f"event '{event_id}' has no snapshot")
    data = await run_in_threadpool(_read_snapshot, ctx, row.snapshot)
    view = redaction(principal, ctx.settings.cameras.get(row.camera))
    if view:
        data = await run_in_threadpool(redact_jpeg, data, view)
    audit(request, principal, "view_snapshot", f"event:{row.id}", camera=row.camera, masked=view.masked,
          faces_blurred=view.faces)
    return Response(data, media_type="image/png" if data.startswith(b"\x89PNG") else "image/jpeg")


@router.post("/api/events/{event_id}/ack", summary="Acknowledge an event")
def acknowledge(request: Request, event_id: EventId, ctx: Ctx,
                principal: Operator) -> dict[str, Any]:
    row = _event(ctx, principal, event_id)
    reviews = Reviews(ctx.engine)
    reviews.acknowledge(row.id, principal.username, principal.user_id)
    audit(request, principal, "ack_event", f"event:{row.id}", camera=row.camera)
    return reviews.states([row.id])[row.id].to_json()


@router.post("/api/events/{event_id}/review", summary="Mark an event true or false positive")
def review(body: ReviewRequest, request: Request, event_id: EventId, ctx: Ctx,
           principal: Operator) -> dict[str, Any]:
    row = _event(ctx, principal, event_id)
    reviews = Reviews(ctx.engine)
    reviews.review(row.id, body.verdict, principal.username, principal.user_id, body.note)
    audit(request, principal, "review_event", f"event:{row.id}", camera=row.camera, verdict=body.verdict.value)
    return reviews.states([row.id])[row.id].to_json()


@router.post("/api/events/{event_id}/export", response_model=None,
             summary="Signed evidence bundle (ZIP) of the event's footage",
             responses={200: {"content": {"application/zip": {}}}})
async def export(request: Request, event_id: EventId, ctx: Ctx, principal: Operator) -> Response:
    """The bundle is built in memory and streamed: decrypted footage is never written to the server's disk."""
    from trustcam.storage.evidence import build_bundle

    row = _event(ctx, principal, event_id)
    if view := redaction(principal, ctx.settings.cameras.get(row.camera)):
        audit(request, principal, "export_event", f"event:{row.id}", outcome="refused", camera=row.camera,
              reason=view.reason)
        raise HTTPException(403, export_refusal(row.camera, view))
    if ctx.vault is None:
        audit(request, principal, "export_event", f"event:{row.id}", outcome="refused", camera=row.camera,
              reason="no vault")
        raise HTTPException(409, "no footage to export: recording is not enabled (set cameras.<name>.record.enabled "
                                 "and restart)")
    try:
        data = await run_in_threadpool(build_bundle, ctx.vault, ctx.engine, row.id)
    except VaultError as exc:
        audit(request, principal, "export_event", f"event:{row.id}", outcome="failed", camera=row.camera,
              reason=str(exc))
        raise HTTPException(409, str(exc)) from None
    name = f"{row.id}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.zip"
    audit(request, principal, "export_event", f"event:{row.id}", camera=row.camera, bundle=name, size=len(data))
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}
    return Response(data, media_type="application/zip", headers=headers)
