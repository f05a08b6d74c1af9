"""Recent alerts (from the bus) and the conditions active right now (from the status board)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from trustcam.security.roles import Role
from trustcam.web.auth import Principal, require
from trustcam.web.context import Ctx

router = APIRouter(tags=["alerts"])
Viewer = Annotated[Principal, Depends(require(Role.viewer, Role.operator, Role.admin))]


@router.get("/api/alerts", summary="Active conditions and recent alerts (health, tamper, drift, coverage, canary)")
def alerts(ctx: Ctx, principal: Viewer,
           limit: int = Query(100, ge=1, le=500, description="Most recent alerts returned.")) -> dict[str, Any]:
    def visible(camera: str | None) -> bool:
        return camera is None or principal.can_see(camera)

    active = [c for c in (ctx.status.all_conditions() if ctx.status else []) if visible(c["camera"])]
    recent = [a.to_json() for a in (ctx.alerts.recent(10_000) if ctx.alerts else []) if visible(a.camera)][:limit]
    return {"active": active, "recent": recent}
