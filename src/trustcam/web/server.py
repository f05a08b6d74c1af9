"""Serve the app with uvicorn in a background thread of `trustcam run` (cameras keep the main process).

The listening socket is bound here, before uvicorn starts, so a port already in use is one clear message
rather than a log line from a thread.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from trustcam.config import ConfigError
from trustcam.web.app import create_app
from trustcam.web.context import AppContext
from trustcam.web.tls import TlsFiles

if TYPE_CHECKING:
    from trustcam.service import Service

log = logging.getLogger(__name__)


class ServerError(ConfigError):
    """The server cannot start (port in use, address not available); the message names the setting to change."""


def bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ServerError(f"server.host '{host}' cannot be resolved ({exc.strerror}); set server.host to an address "
                          "of this machine (0.0.0.0 for all)") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServerError(f"port {port} is in use; set server.port to a free port (or stop the other "
                              "program)") from None
        if exc.errno == errno.EACCES:
            raise ServerError(f"port {port} needs privileges; set server.port above 1024") from None
        raise ServerError(f"cannot listen on {host}:{port} ({exc.strerror}); check server.host and "
                          "server.port") from None
    sock.set_inheritable(True)
    return sock


class WebServer:
    def __init__(self, ctx: AppContext, tls: TlsFiles | None) -> None:
        self.ctx = ctx
        self.tls = tls
        cfg = ctx.settings.server
        self.host, self.port = cfg.host, cfg.port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = socket.gethostname() if self.host in ("0.0.0.0", "::") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/"

    def start(self, timeout_s: float = 15.0) -> None:
        sock = bind(self.host, self.port)
        config = uvicorn.Config(
            create_app(self.ctx), log_level="warning", access_log=False, lifespan="off", proxy_headers=False,
            server_header=False, timeout_graceful_shutdown=3,
            http="auto", loop="auto",  # httptools and uvloop (dependencies) when installed: ~10% less CPU a request
            ssl_certfile=str(self.tls.cert) if self.tls else None, ssl_keyfile=str(self.tls.key) if self.tls else None,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="web-server", daemon=True)
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                with contextlib.suppress(OSError):
                    sock.close()
                raise ServerError(f"the web server did not start on {self.host}:{self.port}; see the log above")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
        if (access := self.ctx.extras.get("access_control")) is not None:
            access.close()  # sign the audit log's head: entries since the last checkpoint are covered too


def start_for_service(service: Service, config_path: Path, say: Callable[[str], None]) -> WebServer:
    """`trustcam run`: start the server for ``service``'s cameras (see :func:`start_web`)."""
    return start_web(AppContext.for_service(service, config_path), say)


def start_web(ctx: AppContext, say: Callable[[str], None]) -> WebServer:
    """Start the server for ``ctx`` (`trustcam run`, or the head of `trustcam cluster`) and tell the user where it
    is, how to check the certificate and, on first start, the one-time setup token."""
    from trustcam.security.setup import ensure_setup_token, token_path
    from trustcam.web.tls import ensure_certificate

    settings = ctx.settings
    tls = None if settings.server.insecure_http else ensure_certificate(settings)
    server = WebServer(ctx, tls)
    server.start()
    say(f"web UI and API: {server.url}")
    if tls is not None:
        origin = f"self-signed, {tls.cert}" if tls.generated else str(tls.cert)
        say(f"TLS certificate SHA-256 fingerprint ({origin}): {tls.fingerprint}")
        say("  compare it with the one your browser shows before you log in")
    token = ensure_setup_token(settings, ctx.engine)
    if token is not None:
        say(f"first start, no user yet: open {server.url} and create the admin with the setup token {token} "
            f"(also in {token_path(settings)}, readable only by this user; it stops working once used)")
    return server
