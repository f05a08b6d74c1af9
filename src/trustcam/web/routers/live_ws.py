"""Live video over a WebSocket: fragmented MP4 for Media Source Extensions, plus the object boxes as JSON.

``WS /api/cameras/{name}/live.ws`` carries, in order: a text message ``{"type": "init", "codec", "mime", "width",
"height", "zones"}`` followed by the binary init segment, then binary media fragments (one frame each, starting at
a keyframe) interleaved with text messages ``{"type": "objects", "t", "wall", "objects": [{"id", "label",
"score", "box": [x1, y1, x2, y2] as fractions of the picture]}`` (``t``: the media time of the analysed frame) and
``{"type": "clock", "t", "wall"}`` (media time ↔ wall-clock time the server received that frame). A second init
pair means the stream's codec changed: the player starts over.

Same rights as ``live.mjpeg``: a viewer, operator or admin with the camera granted, by session cookie (browsers
send it on the upgrade request; the ``Origin`` header must then be this server's own, against cross-site WebSocket
hijacking) or API token (``Authorization: Bearer`` or the subprotocol pair ``trustcam.live, bearer.<token>``). The
right is re-checked every :data:`RECHECK_S` seconds: a logout, revoked token, disabled user or removed grant closes
the socket. Close codes: 4401 not signed in, 4403 not allowed (the same for a camera that does not exist), 4406 raw
video not allowed for this user (the page falls back to the MJPEG stream), 1008 wrong origin (refused with HTTP 403
before the upgrade).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool

from trustcam.config.schema import CameraConfig
from trustcam.vision.privacy import redaction
from trustcam.web.auth import SESSION_COOKIE, Principal, audit, still_signed_in
from trustcam.web.live_mse import Viewer, live_video
from trustcam.web.routers.cameras import LIVE_ROLES, RECHECK_S

router = APIRouter(tags=["cameras"])
log = logging.getLogger(__name__)

SUBPROTOCOL = "trustcam.live"
BEARER_PREFIX = "bearer."
NOT_SIGNED_IN, NOT_ALLOWED, RAW_VIDEO_DENIED = 4401, 4403, 4406


def raw_video_allowed(principal: Principal, camera_config: CameraConfig) -> bool:
    """May ``principal`` receive ``camera_config``'s raw video (no privacy masks drawn into it, no face blurred)? The
    one place that decides it for live video; when it says no, the browser falls back to the (redacted) MJPEG stream.
    Packets cannot be masked or blurred without decoding, so a camera with privacy masks streams raw only to users
    with ``unmasked``, and one with ``faces.enabled`` only to users with ``biometrics``."""
    return not redaction(principal, camera_config)


def _origin_ok(ws: WebSocket) -> bool:
    """No ``Origin`` (not a browser: a script with a token) or this server's own: a page on another site must not
    ride the browser's session cookie into a live stream (cross-site WebSocket hijacking)."""
    origin = ws.headers.get("origin")
    if origin is None:
        return True
    host = ws.headers.get("host", "")
    scheme = "https" if ws.url.scheme == "wss" else "http"
    parts = urlsplit(origin)
    return parts.scheme == scheme and parts.netloc.lower() == host.lower() and bool(host)


def _credential(ws: WebSocket) -> tuple[str | None, str | None, str | None]:
    """(bearer token, session cookie, subprotocol to answer with) from the upgrade request."""
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    token = next((p[len(BEARER_PREFIX):] for p in offered if p.startswith(BEARER_PREFIX)), None)
    header = ws.headers.get("authorization", "")
    if token is None and header.lower().startswith("bearer "):
        token = header[7:].strip() or None
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
    return token, ws.cookies.get(SESSION_COOKIE) if token is None else None, subprotocol


def _admit(ws: WebSocket, name: str) -> tuple[int, str, Principal | None]:
    """(0, "", principal) when the caller may watch ``name``, else (close code, reason, principal or None)."""
    token, cookie, _ = _credential(ws)
    if token is None and not cookie:
        return NOT_SIGNED_IN, "not signed in: log in, or send an API token", None
    ws.state.credential = (token, cookie)  # what still_signed_in reads, now and at every re-check
    principal = still_signed_in(ws)  # type: ignore[arg-type]
    if principal is None:
        return NOT_SIGNED_IN, "session expired or ended, token revoked, or two-factor enrolment pending", None
    settings = ws.app.state.ctx.settings
    camera = settings.cameras.get(name)
    if principal.role not in LIVE_ROLES or not principal.can_see(name) or camera is None or not camera.enabled:
        return NOT_ALLOWED, f"no camera '{name}' that you may watch", principal
    if not raw_video_allowed(principal, camera):
        return RAW_VIDEO_DENIED, "privacy masks or face blurring apply to you on this camera: watch live.mjpeg", \
            principal
    return 0, "", principal


def _ended(ws: WebSocket, name: str) -> tuple[int, str] | None:
    """(close code, why) when the viewer may no longer watch, or None (as live.mjpeg asks it)."""
    now = still_signed_in(ws)  # type: ignore[arg-type]
    if now is None:
        return NOT_SIGNED_IN, "signed out, credential revoked or user disabled"
    if now.role not in LIVE_ROLES:
        return NOT_ALLOWED, f"role is now {now.role.value}"
    if not now.can_see(name):
        return NOT_ALLOWED, "camera no longer granted"
    camera = ws.app.state.ctx.settings.cameras.get(name)
    if camera is None or not raw_video_allowed(now, camera):
        return RAW_VIDEO_DENIED, "raw video no longer allowed"
    return None


@router.websocket("/api/cameras/{name}/live.ws")
async def live_ws(ws: WebSocket, name: str) -> None:
    if not _origin_ok(ws):
        await ws.close(1008, "cross-origin live video refused")  # before accept: HTTP 403, nothing upgraded
        return
    subprotocol = _credential(ws)[2]
    code, reason, principal = await run_in_threadpool(_admit, ws, name)
    await ws.accept(subprotocol=subprotocol)
    if code or principal is None:
        if principal is not None:
            await run_in_threadpool(audit, ws, principal, "view_live", name, outcome="denied", transport="mse")
        await ws.close(code or NOT_ALLOWED, reason)
        return
    await run_in_threadpool(audit, ws, principal, "view_live", name, transport="mse")
    feed = live_video(ws.app.state.ctx).feeds.get(name)
    if feed is None:  # enabled after the server started: live video needs a restart (MJPEG works)
        await ws.close(NOT_ALLOWED, f"camera '{name}' has no live video until trustcam restarts; watch live.mjpeg")
        return
    viewer = Viewer(asyncio.get_running_loop())
    feed.subscribe(viewer)
    tasks = [asyncio.create_task(_send(ws, viewer)), asyncio.create_task(_watch(ws, name)),
             asyncio.create_task(_drain(ws))]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        ended = next((t.result() for t in done if not t.cancelled() and t.exception() is None
                      and isinstance(t.result(), tuple)), None)
    finally:
        feed.unsubscribe(viewer)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
    if ended is not None:
        await run_in_threadpool(audit, ws, principal, "view_live.ended", name, reason=ended[1], transport="mse")
        with contextlib.suppress(Exception):
            await ws.close(*ended)


async def _send(ws: WebSocket, viewer: Viewer) -> None:
    """Queued messages out, in order; returns when the socket is gone."""
    try:
        while True:
            await viewer.ready.wait()
            for item in viewer.take():
                if item.kind == "init":
                    await ws.send_json(item.meta)
                    await ws.send_bytes(item.data)
                elif item.kind == "frag":
                    await ws.send_bytes(item.data)
                else:
                    await ws.send_json(item.meta)
    except (WebSocketDisconnect, RuntimeError, OSError):
        return


async def _watch(ws: WebSocket, name: str) -> tuple[int, str]:
    """Re-check the viewer's right every RECHECK_S; returns (close code, why) once it ended."""
    while True:
        await asyncio.sleep(RECHECK_S)
        reason = await run_in_threadpool(_ended, ws, name)
        if reason is not None:
            return reason


async def _drain(ws: WebSocket) -> Any:
    """Read (and ignore) what the client sends, to notice it hanging up."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return None
    return None
