"""Cameras the principal may see: health from the status board, zones, live MJPEG and the latest frame."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import Field

from trustcam.config.schema import NAME_PATTERN
from trustcam.security.roles import Role
from trustcam.vision.privacy import redaction
from trustcam.web.auth import Principal, audit, require, require_camera, still_signed_in
from trustcam.web.context import AppContext, Ctx
from trustcam.web.live import LiveHub
from trustcam.web.models import ApiModel

router = APIRouter(tags=["cameras"])
LIVE_ROLES = frozenset({Role.viewer, Role.operator, Role.admin})
Viewer = Annotated[Principal, Depends(require(*sorted(LIVE_ROLES)))]
RECHECK_S = 2.0  # an open stream re-checks its credential and camera grant this often
BOUNDARY = "trustcam-frame"
CameraName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=63, description="Camera name from the config.")]


def _camera(ctx: AppContext, principal: Principal, name: str) -> None:
    require_camera(principal, name)
    camera = ctx.settings.cameras.get(name)
    if camera is None or not camera.enabled:
        raise HTTPException(404, f"no camera '{name}'; GET /api/cameras lists the cameras you can see")


def _hub(ctx: AppContext) -> LiveHub:
    assert ctx.live is not None  # AppContext always makes one
    return ctx.live


@router.get("/api/cameras", summary="Cameras you may see, with their health and zones")
def list_cameras(ctx: Ctx, principal: Viewer) -> list[dict[str, Any]]:
    out = []
    for name, cam in ctx.settings.cameras.items():
        if not cam.enabled or not principal.can_see(name):
            continue
        entry = ctx.status.camera(name) if ctx.status is not None else {"name": name}
        entry["zones"] = {zone: [list(p) for p in cfg.coordinates] for zone, cfg in cam.zones.items()}
        entry["live"] = _hub(ctx).seq(name) > 0
        entry["second_opinion"] = _second_opinion(ctx, name).model_dump()
        out.append(entry)
    return out


@router.get("/api/cameras/{name}/snapshot.jpg", response_class=Response, summary="Latest analysed frame (JPEG)",
            responses={200: {"content": {"image/jpeg": {}}}})
async def snapshot(request: Request, name: CameraName, ctx: Ctx,
                   principal: Viewer) -> Response:
    _camera(ctx, principal, name)
    view = redaction(principal, ctx.settings.cameras[name])
    got = await run_in_threadpool(_hub(ctx).jpeg, name, view)
    if got is None:
        raise HTTPException(503, f"camera '{name}' has no analysed frame yet (connecting); try again in a moment")
    audit(request, principal, "view_snapshot", name, masked=view.masked, faces_blurred=view.faces)
    return Response(got[1], media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get("/api/cameras/{name}/live.mjpeg", response_class=StreamingResponse,
            summary="Live MJPEG stream with boxes and zones (multipart/x-mixed-replace)",
            responses={200: {"content": {f"multipart/x-mixed-replace; boundary={BOUNDARY}": {}}}})
async def live(request: Request, name: CameraName, ctx: Ctx,
               principal: Viewer) -> StreamingResponse:
    _camera(ctx, principal, name)
    view = redaction(principal, ctx.settings.cameras[name])
    audit(request, principal, "view_live", name, masked=view.masked, faces_blurred=view.faces)
    hub = _hub(ctx)
    poll = min(0.05, 0.5 / ctx.settings.cameras[name].detect.fps)

    def ended() -> str | None:
        """Why the viewer may no longer watch (logged out, password changed, token revoked, user disabled, role
        or camera grant changed, unmasked or biometrics revoked), or None."""
        now = still_signed_in(request)
        if now is None:
            return "signed out, credential revoked or user disabled"
        if now.role not in LIVE_ROLES:
            return f"role is now {now.role.value}"
        if (lost := view.lost(redaction(now, ctx.settings.cameras[name]))) is not None:
            return lost
        return None if now.can_see(name) else "camera no longer granted"

    async def frames() -> AsyncIterator[bytes]:
        last = 0
        recheck_at = time.monotonic() + RECHECK_S
        while not await request.is_disconnected():
            if time.monotonic() >= recheck_at:
                if (reason := await run_in_threadpool(ended)) is not None:
                    await run_in_threadpool(audit, request, principal, "view_live.ended", name, reason=reason)
                    return
                recheck_at = time.monotonic() + RECHECK_S
            if hub.seq(name) != last:
                got = await run_in_threadpool(hub.jpeg, name, view)
                if got is not None:
                    last, jpeg = got
                    yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                           .encode() + jpeg + b"\r\n")
            await asyncio.sleep(poll)

    return StreamingResponse(frames(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                             headers={"Cache-Control": "no-store"})


class SecondOpinionStatus(ApiModel):
    enabled: bool = Field(description="A second, different model checks this camera's frames against evasion "
                          "attacks on the primary (detector.second_opinion.enabled).")
    checked_share: float | None = Field(description="Share of analysed frames the second model looked at since the "
                                        "camera's analysis started (0..1); null while it is not running or off.")
    disagreements_per_hour: float | None = Field(description="Objects tracked by the second model alone, per hour "
                                                 "of analysed footage; null while not running or off.")


def _second_opinion(ctx: AppContext, name: str) -> SecondOpinionStatus:
    """The running pipeline's own counters (the same as the trustcam_second_opinion_* metrics)."""
    camera = ctx.settings.cameras.get(name)
    enabled = camera is not None and ctx.settings.second_opinion_for(camera).enabled
    worker = next((w for w in (ctx.service.workers if ctx.service else []) if w.camera_name == name), None)
    stats = worker.pipeline.stats if worker is not None and enabled else None
    if stats is None or not stats.frames:
        return SecondOpinionStatus(enabled=enabled, checked_share=None, disagreements_per_hour=None)
    hours = stats.span_s / 3600
    return SecondOpinionStatus(enabled=enabled, checked_share=round(stats.second_opinion_checks / stats.frames, 4),
                               disagreements_per_hour=round(stats.disagreements / hours, 2) if hours else None)


class GridCamera(ApiModel):
    name: str
    state: str = Field(description="Stream health: connected, connecting, stopped, disconnected or not running.")
    fps: float = Field(description="Frames analysed per second lately.")
    frames: int = Field(description="Frames analysed since start.")
    coverage: str = Field(description="Detector coverage: full, degraded (on a backup detector) or blind.")
    canary: dict[str, Any] | None = Field(description="The last canary self-test (as in GET /api/cameras), or null "
                                          "before the first probe.")
    alerts: list[dict[str, Any]] = Field(description="Conditions active now: [{kind, detail, message, since}].")
    recording: bool = Field(description="record.enabled: the stream is recorded into the evidence vault.")
    live: bool = Field(description="A live frame is available (snapshot.jpg and live.mjpeg answer).")
    second_opinion: SecondOpinionStatus = Field(description="The run-time second opinion against evasion attacks.")
    node: str | None = Field(None, description="Under `trustcam cluster`: the address of the node running the camera "
                             "(null while it moves); null on a single box.")


class GridGroup(ApiModel):
    name: str
    order: int = Field(description="Position in the group selector (groups come sorted by order, then name).")
    cameras: list[str] = Field(description="The group's cameras that the caller may see, in config order.")


class GridOut(ApiModel):
    cameras: list[GridCamera] = Field(description="Every enabled camera granted to the caller, in config order.")
    groups: list[GridGroup] = Field(description="Camera groups holding at least one of those cameras.")


def _grid_camera(ctx: AppContext, name: str) -> GridCamera:
    assert ctx.status is not None  # AppContext always makes one
    return GridCamera(**ctx.status.camera(name), recording=ctx.settings.cameras[name].record.enabled,
                      live=_hub(ctx).seq(name) > 0, second_opinion=_second_opinion(ctx, name))


def _grid_groups(ctx: AppContext, visible: list[str]) -> list[GridGroup]:
    """Groups cut down to the caller's cameras; a group left empty is dropped, so no hidden name leaks out."""
    groups = []
    for name, group in ctx.settings.camera_groups.items():
        cameras = [camera for camera in visible if camera in group.cameras]
        if cameras:
            groups.append(GridGroup(name=name, order=group.order, cameras=cameras))
    return sorted(groups, key=lambda g: (g.order, g.name))


@router.get("/api/cameras/grid", response_model=GridOut,
            summary="Camera grid: your cameras with health, AI coverage, canary and recording, and their groups")
def grid(ctx: Ctx, principal: Viewer) -> GridOut:
    visible = [name for name, cam in ctx.settings.cameras.items() if cam.enabled and principal.can_see(name)]
    return GridOut(cameras=[_grid_camera(ctx, name) for name in visible], groups=_grid_groups(ctx, visible))
