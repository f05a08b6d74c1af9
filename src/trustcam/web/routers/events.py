"""Events: list and filter, one event with its review state, its snapshot, acknowledge, review, export evidence.

Viewers only ever see events of the cameras granted to them; an event of another camera answers exactly like
one that does not exist (the same 404, byte for byte).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import Field
from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from trustcam.security.roles import Role
from trustcam.storage.reviews import Reviews, ReviewState, Verdict, reviewed_clause
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


def event_json(row: EventRow | Row[Any], state: ReviewState, biometrics: bool = False) -> dict[str, Any]:
    """One event as the API answers it; identities (``sub_label``, the face distance and margin) only to users with
    the ``biometrics`` permission (null for everyone else, whatever the role)."""
    return {
        "id": row.id, "camera": row.camera, "label": row.label, "track_id": row.track_id, "start": row.start,
        "end": row.end, "best_score": row.best_score, "box": row.box, "zones": row.zones, "rules": row.rules,
        "threat": row.threat, "has_snapshot": bool(row.snapshot), "held": bool(row.held),
        "model": {"name": row.model_name, "sha256": row.model_sha256},
        "seen_by": row.seen_by,  # with detector.second_opinion: primary, secondary or both (null: not checked)
        **_identity(row, biometrics),
        **state.to_json(),
    }


def _identity(row: EventRow | Row[Any], biometrics: bool) -> dict[str, Any]:
    """Face recognition's answer for the event: the identity's name, "unknown face" or "erased", with the distance
    to the match and the margin to the next identity; all null without ``biometrics``."""
    if not biometrics:
        return {"sub_label": None, "face_distance": None, "face_margin": None}
    return {"sub_label": getattr(row, "sub_label", None), "face_distance": getattr(row, "face_distance", None),
            "face_margin": getattr(row, "face_margin", None)}


NO_EVENT = "no such event (or not on a camera you may see); GET /api/events lists yours"


def _event(ctx: AppContext, principal: Principal, event_id: str) -> EventRow:
    """The event, or the one 404 that a missing event and an event of a camera not granted share: same status,
    body and headers, so no route tells a viewer which ids (or cameras) exist."""
    with Session(ctx.engine, expire_on_commit=False) as session:
        row = session.get(EventRow, event_id)
    if row is None or not principal.can_see(row.camera):
        raise HTTPException(404, NO_EVENT)
    return row


@router.get("/api/events", summary="Events, newest first, with filters and pagination")
def list_events(
    ctx: Ctx,
    principal: Viewer,
    camera: Annotated[str | None, Query(max_length=63, description="Only this camera.")] = None,
    label: Annotated[str | None, Query(max_length=32, description="Only this object label (e.g. person).")] = None,
    since: Annotated[float | None, Query(allow_inf_nan=False, description="Start at or after (epoch s).")] = None,
    until: Annotated[float | None, Query(allow_inf_nan=False, description="Events starting before (epoch s).")] = None,
    reviewed: Annotated[bool | None, Query(description="true: with a verdict; false: without.")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="Events skipped.")] = 0,
) -> dict[str, Any]:
    conditions = []
    if camera is not None:
        require_camera(principal, camera)
        conditions.append(EventRow.camera == camera)
    if principal.cameras is not None:
        conditions.append(EventRow.camera.in_(sorted(principal.cameras)))
    if label is not None:
        conditions.append(EventRow.label == label)
    if since is not None:
        conditions.append(EventRow.start >= since)
    if until is not None:
        conditions.append(EventRow.start < until)
    if reviewed is not None:
        conditions.append(reviewed_clause(reviewed))
    # Plain rows, not ORM objects: nothing is changed or lazily loaded, and building 50 mapped instances per page
    # cost more than the indexed queries themselves (ix_events_*_start_id keep both to an index walk).
    with ctx.engine.connect() as connection:
        total = connection.scalar(select(func.count()).select_from(EventRow).where(*conditions)) or 0
        rows = connection.execute(select(*EventRow.__table__.columns).where(*conditions)
                                  .order_by(EventRow.start.desc(), EventRow.id).limit(limit).offset(offset)).all()
    states = Reviews(ctx.engine).states([row.id for row in rows])
    return {"events": [event_json(row, states[row.id], principal.biometrics) for row in rows], "total": total}


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
