"""Recent alerts (from the bus), the conditions active right now (from the status board), and the dead-letter
queue (alerts a sink gave up on) with replay for admins."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from pydantic import Field

from trustcam.alerts.outbox import Delivery, Outbox
from trustcam.security.roles import Role
from trustcam.web.auth import Principal, audit, require
from trustcam.web.context import Ctx
from trustcam.web.models import ApiModel

router = APIRouter(tags=["alerts"])
Viewer = Annotated[Principal, Depends(require(Role.viewer, Role.operator, Role.admin))]
Admin = Annotated[Principal, Depends(require(Role.admin))]


class Condition(ApiModel):
    camera: str | None
    kind: str = Field(description="health, tamper, drift, coverage or canary.")
    detail: str = Field(description="e.g. offline, covered, brightness, blind, miss.")
    message: str
    since: float


class AlertsOut(ApiModel):
    active: list[Condition] = Field(description="Conditions active now (a camera cannot be trusted while one is).")
    recent: list[dict[str, Any]] = Field(description="Alert.to_json() of recent alerts, newest first.")


class DeadLetter(ApiModel):
    id: int = Field(description="Outbox row id (POST /api/alerts/dead-letters/{id}/replay).")
    sink: str = Field(description="'log', 'mqtt' or 'webhook:<name>'.")
    attempts: int
    last_error: str | None = Field(description="Why the last attempt failed.")
    created: float = Field(description="When the alert was queued (epoch s).")
    alert: dict[str, Any] = Field(description="Alert.to_json() of the alert that was not delivered.")

    @classmethod
    def of(cls, row: Delivery) -> DeadLetter:
        return cls(id=row.id, sink=row.sink, attempts=row.attempts, last_error=row.last_error, created=row.created,
                   alert=row.alert.to_json())


class ReplayOut(ApiModel):
    replayed: int = Field(description="The outbox row now pending again.")
    sink: str
    detail: str


@router.get("/api/alerts", response_model=AlertsOut,
            summary="Active conditions and recent alerts (health, tamper, drift, coverage, canary)")
def alerts(ctx: Ctx, principal: Viewer,
           limit: int = Query(100, ge=1, le=500, description="Most recent alerts returned.")) -> AlertsOut:
    def visible(camera: str | None) -> bool:
        return camera is None or principal.can_see(camera)

    active = [c for c in (ctx.status.all_conditions() if ctx.status else []) if visible(c["camera"])]
    recent = [a.to_json() for a in (ctx.alerts.recent(10_000) if ctx.alerts else []) if visible(a.camera)][:limit]
    return AlertsOut(active=[Condition(**c) for c in active], recent=recent)


@router.get("/api/alerts/dead-letters", response_model=list[DeadLetter],
            summary="Alerts a sink gave up on (the dead-letter queue), oldest first")
def dead_letters(ctx: Ctx, _principal: Admin) -> list[DeadLetter]:
    return [DeadLetter.of(row) for row in Outbox(ctx.engine).rows(state="dead")]


@router.post("/api/alerts/dead-letters/{row_id}/replay", response_model=ReplayOut,
             summary="Send a dead letter again (back to pending: the running dispatcher delivers it)")
def replay(request: Request, ctx: Ctx, principal: Admin,
           row_id: Annotated[int, PathParam(ge=1, le=2**62, description="Dead-letter id.")]) -> ReplayOut:
    outbox = Outbox(ctx.engine)
    rows = outbox.rows(state="dead", row_id=row_id)
    if not rows or not outbox.replay([row_id]):
        audit(request, principal, "alert.replay", f"outbox:{row_id}", outcome="refused", reason="no such dead letter")
        raise HTTPException(404, f"no dead letter with id {row_id} (already replayed or delivered?); "
                                 "GET /api/alerts/dead-letters lists them")
    row = rows[0]
    dispatcher = getattr(ctx.service, "alerts", None)
    if dispatcher is not None:
        dispatcher.wake([row.sink])
    audit(request, principal, "alert.replay", f"outbox:{row_id}", sink=row.sink, alert=row.alert.id,
          kind=row.alert.kind, camera=row.alert.camera)
    return ReplayOut(replayed=row_id, sink=row.sink,
                     detail=f"queued again for {row.sink}; the running dispatcher delivers it now (if {row.sink} "
                            "fails again, it returns here after its attempts)")
