"""Liveness (public, reveals nothing) and Prometheus metrics (admin; scrape with an admin API token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import PlainTextResponse

from trustcam.security.roles import Role
from trustcam.web.auth import Principal, require
from trustcam.web.context import Ctx

router = APIRouter(tags=["system"])
Admin = Annotated[Principal, Depends(require(Role.admin))]


@router.get("/api/health", summary="Liveness: always {\"status\": \"ok\"} while the server runs")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics (text format)")
def metrics(ctx: Ctx, _principal: Admin) -> str:
    source = ctx.extras.get("metrics")
    if source is None:
        raise HTTPException(503, "metrics are not available in this process (no metrics collector was started); "
                                 "they are served by `trustcam run`")
    text: str | bytes = source.render()
    return text.decode() if isinstance(text, bytes) else text
