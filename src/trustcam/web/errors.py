"""Every error is JSON ``{"detail": ...}``; an unexpected one is logged with a reference, never shown as a traceback.

Also the security headers every response carries: the UI is same-origin only (CSP without inline scripts),
cannot be framed (clickjacking), and browsers are told to stay on HTTPS.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("trustcam.web")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
       "connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> Response:
        return JSONResponse({"detail": _validation_message(exc)}, status_code=422)


class SecurityHeaders:
    """Pure ASGI middleware (streams such as MJPEG pass through untouched): adds the headers to every response and
    turns an exception that escaped everything else into the same JSON 500 as :func:`install_error_handlers`."""

    def __init__(self, app: ASGIApp, tls: bool) -> None:
        self.app = app
        self.extra: list[tuple[bytes, bytes]] = [
            (b"content-security-policy", CSP.encode()),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
        ]
        if tls:
            self.extra.append((b"strict-transport-security", b"max-age=31536000"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        api = scope.get("path", "").startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in self._names]
                headers += self.extra
                if api and not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = dict(message, headers=headers)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            reference = uuid.uuid4().hex[:12]
            log.error("internal error (reference %s) on %s %s", reference, scope.get("method"), scope.get("path"),
                      exc_info=exc)
            if not started:
                response = JSONResponse({"detail": f"internal error; see the server log (reference {reference})"},
                                        status_code=500)
                await response(scope, receive, send_with_headers)

    @property
    def _names(self) -> set[bytes]:
        return {k for k, _ in self.extra}
