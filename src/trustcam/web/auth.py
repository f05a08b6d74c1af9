"""Authentication and authorisation for every route (the contract the routers import).

Every router declares its roles with ``Depends(require(...))``; nothing else checks permissions.

    principal: Principal = Depends(require(Role.viewer, Role.operator, Role.admin))

- ``require(*roles)`` returns a FastAPI dependency that authenticates the request (session cookie
  ``trustcam_session`` or ``Authorization: Bearer <api token>``), answers 401 ``{"detail": ...}`` when there is
  none or it expired, 403 when the principal's role is not among ``roles`` (or its session still has to enrol
  MFA), and for cookie sessions on unsafe methods (POST/PUT/PATCH/DELETE) checks the ``X-CSRF-Token`` header
  against the session's CSRF token (403 otherwise). It returns the :class:`Principal`. ``require()`` with no
  role admits any signed-in user. A credential's principal is reused for up to a second while the database is
  unchanged (:class:`PrincipalCache`): any commit, from any process, makes the next request look it up again.
- ``require_camera(principal, camera)`` raises 404 when the camera is not granted to the principal (a viewer must
  not learn that other cameras exist).
- ``audit(request, principal, action, target, outcome="ok", **details)`` appends to the hash-chained audit log
  with who, when and from where (client address). Call it for every view of live video, snapshot or clip,
  every export, every config/user change, every review.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import itertools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from fastapi import HTTPException, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from trustcam.security.access import AccessControl
from trustcam.security.credentials import csrf_token, digest, public_id
from trustcam.security.errors import SecurityError
from trustcam.security.roles import Role
from trustcam.storage.database import sqlite_file

SESSION_COOKIE = "trustcam_session"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# What a session may reach while its user still has to enrol MFA (nothing else, not even API tokens).
ENROLMENT_PATHS = frozenset({"/api/me", "/api/me/mfa/enroll", "/api/me/mfa/confirm", "/api/me/password",
                             "/api/auth/logout"})

_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="Session from POST /api/auth/login "
                       "(send X-CSRF-Token on POST/PUT/PATCH/DELETE).")
_bearer = HTTPBearer(auto_error=False, description="API token tc_<id>_<secret> from POST /api/me/tokens.")
_lock = threading.Lock()


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    role: Role
    cameras: frozenset[str] | None  # None: all cameras
    via: Literal["session", "token"]
    credential_id: str  # session id or token id (audit entries name it)
    unmasked: bool = False  # the user may see behind privacy masks (trustcam.vision.privacy.must_mask)
    biometrics: bool = False  # sees faces unblurred and identities (trustcam.vision.privacy.must_blur_faces)

    def can_see(self, camera: str) -> bool:
        return self.cameras is None or camera in self.cameras


def access_control(request: Request) -> AccessControl:
    """The app's :class:`AccessControl`, made on first use from ``app.state.ctx`` (settings + engine)."""
    ctx = request.app.state.ctx
    return _extra(ctx, "access_control", lambda: (  # type: ignore[no-any-return]
        ctx.service.access_control() if ctx.service is not None  # `trustcam run`: the service's, with its witness
        else AccessControl(ctx.settings, ctx.engine)))


def _extra(ctx: Any, key: str, make: Callable[[], Any]) -> Any:
    """``ctx.extras[key]``, made by ``make`` on first use (once, whichever request thread gets there first)."""
    found = ctx.extras.get(key)
    if found is None:
        with _lock:
            found = ctx.extras.get(key)
            if found is None:
                found = ctx.extras[key] = make()
    return found


@functools.lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def _trusted(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in networks)


def forwarded_client(peer: str, forwarded_for: list[str], trusted_proxies: tuple[str, ...]) -> str:
    """The client address: the direct peer, unless it is a trusted proxy; then the rightmost X-Forwarded-For hop
    that is not a trusted proxy. Hops left of it were written by the client and are never read (anyone can send
    the header; only what our own proxies appended counts)."""
    networks = _networks(trusted_proxies)
    if not networks or not _trusted(peer, networks):
        return peer
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage where our proxy should have written an address: do not trust it
    return hops[0] if hops else peer


def client_address(request: Request) -> str:
    """Who is on the other end, as lockout, sessions and the audit log see it (``server.trusted_proxies``)."""
    peer = request.client.host if request.client else ""
    proxies = tuple(request.app.state.ctx.settings.server.trusted_proxies)
    return forwarded_client(peer, request.headers.getlist("x-forwarded-for"), proxies) if proxies else peer


@contextmanager
def http_errors() -> Iterator[None]:
    """Turn a :class:`SecurityError` into the JSON HTTP error it stands for (429 with Retry-After)."""
    try:
        yield
    except SecurityError as exc:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        raise HTTPException(exc.status, exc.detail, headers=headers) from None


def _unauthenticated(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


class Found(NamedTuple):
    principal: Principal
    mfa_pending: bool  # the session's user must still enrol MFA
    expires: float  # epoch s: the token's or session's absolute end


def _lookup(service: AccessControl, bearer: str | None, cookie: str | None) -> Found | None:
    """The principal behind a bearer token or session cookie (database reads only, no argon2), with whether its
    session must still enrol MFA; None when the credential is unknown, expired, revoked or its user disabled."""
    if bearer is not None:
        found = service.by_token(bearer)
        if found is None:
            return None
        user, token = found
        return Found(Principal(user.id, user.username, token.role, user.cameras, "token", f"token:{token.id}",
                               user.unmasked, user.biometrics), False, token.expires)
    if cookie:
        found_session = service.by_session(cookie)
        if found_session is None:
            return None
        user, session = found_session
        return Found(Principal(user.id, user.username, user.role, user.cameras, "session", public_id(session.digest),
                               user.unmasked, user.biometrics), service.mfa_pending(user), session.expires)
    return None


PRINCIPAL_TTL_S = 1.0  # how long a looked-up principal may answer for its credential without the database


class DatabaseVersion:
    """A number that changes whenever anything is committed to the SQLite database, by this process or any other:
    ``PRAGMA data_version`` on a connection of our own that never writes (a few µs, no I/O, no thread hop)."""

    def __init__(self, path: Path) -> None:
        self._connection = sqlite3.connect(path, check_same_thread=False)
        self._lock = threading.Lock()
        self._failures = itertools.count(-1, -1)

    def __call__(self) -> int:
        try:
            with self._lock:
                return int(self._connection.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return next(self._failures)  # never equal to an earlier answer: whatever was cached is looked up again


class _Cached(NamedTuple):
    found: Found
    version: int  # the database's version before the lookup
    monotonic: float
    wall: float


class PrincipalCache:
    """Principals of credentials seen in the last second, so that most requests authenticate without a database
    query and without a thread hop (together most of an API request's cost after its own query).

    An entry answers only while the database is unchanged since *before* its lookup: any commit, by this process or
    another (a revocation, logout, disabling, role or camera change in the API, ``trustcam users disable`` on the
    CLI, or a row edited by hand) retires every entry before the next request, so nothing is refused or allowed
    later than without the cache. It also ages out after PRINCIPAL_TTL_S (by both clocks) and at the credential's
    own end, so a busy credential is still looked up every second (its ``last_used`` / ``last_seen`` stay fresh).
    Only SQLite can tell cheaply that nothing changed: with PostgreSQL (or an in-memory database) nothing is cached
    and every request is looked up. Keys are sha256 digests, never the secrets; only valid credentials are cached."""

    def __init__(self, version: DatabaseVersion | None, ttl_s: float = PRINCIPAL_TTL_S, size: int = 4096) -> None:
        self.version = version
        self.ttl_s = ttl_s
        self.size = size
        self._entries: dict[str, _Cached] = {}

    @classmethod
    def for_engine(cls, engine: Engine) -> PrincipalCache:
        database = sqlite_file(engine.url.render_as_string(hide_password=False))
        return cls(DatabaseVersion(database) if database is not None else None)

    @staticmethod
    def key(bearer: str | None, cookie: str | None) -> str:
        return f"t{digest(bearer)}" if bearer is not None else f"s{digest(cookie or '')}"

    def current(self) -> int | None:
        """The version to :meth:`put` with (read before the lookup); None: nothing is cached."""
        return self.version() if self.version is not None else None

    def get(self, key: str) -> Found | None:
        entry = self._entries.get(key)
        if entry is None or self.version is None:
            return None
        wall = time.time()
        if (not 0 <= wall - entry.wall < self.ttl_s or time.monotonic() - entry.monotonic >= self.ttl_s
                or wall >= entry.found.expires or entry.version != self.version()):
            self._entries.pop(key, None)
            return None
        return entry.found

    def put(self, key: str, found: Found, version: int | None) -> None:
        if version is None:
            return
        if len(self._entries) >= self.size:
            self._entries.clear()  # thousands of credentials active within a second: start over
        self._entries[key] = _Cached(found, version, time.monotonic(), time.time())


def principal_cache(request: Request) -> PrincipalCache:
    """The app's :class:`PrincipalCache` (one per app and database), made on first use."""
    ctx = request.app.state.ctx
    return _extra(ctx, "principal_cache", lambda: PrincipalCache.for_engine(ctx.engine))  # type: ignore[no-any-return]


def _admit(request: Request, found: Found, cookie: str | None, token_value: str | None) -> Principal:
    """The checks made on every request whatever the lookup (MFA enrolment, CSRF), then the request's principal."""
    principal = found.principal
    if principal.via == "session":
        if found.mfa_pending and request.url.path not in ENROLMENT_PATHS:
            raise HTTPException(403, f"your role ({principal.role.value}) requires two-factor authentication: enrol "
                                "first with POST /api/me/mfa/enroll, then POST /api/me/mfa/confirm")
        if request.method in UNSAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), csrf_token(cookie or "").encode()):
                raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header; send the csrf_token from the login "
                                    "answer or GET /api/me")
    request.state.principal = principal
    request.state.session_secret = cookie if principal.via == "session" else None
    request.state.credential = (token_value, cookie if principal.via == "session" else None)
    return principal


def authenticate(request: Request, cookie: str | None, bearer: HTTPAuthorizationCredentials | None) -> Principal:
    """Who is asking (bearer token first, then the session cookie), with MFA-enrolment and CSRF checks. Reads the
    database (call it in a worker thread) and leaves the principal in :func:`principal_cache`."""
    service = access_control(request)
    if bearer is None and not cookie:
        raise _unauthenticated("not signed in: log in (POST /api/auth/login) or send 'Authorization: Bearer "
                               "<api token>'")
    token_value = bearer.credentials if bearer is not None else None
    cache = principal_cache(request)
    version = cache.current()  # before the lookup: a change committed during it retires the entry
    found = _lookup(service, token_value, cookie)
    if found is None and token_value is not None:
        raise _unauthenticated("API token invalid, expired or revoked (or its role needs MFA and its owner has "
                               "none); create a new one (POST /api/me/tokens)")
    if found is None:
        raise _unauthenticated("session expired or ended; log in again (POST /api/auth/login)")
    cache.put(PrincipalCache.key(token_value, cookie), found, version)
    return _admit(request, found, cookie, token_value)


def authenticate_cached(request: Request, cookie: str | None,
                        bearer: HTTPAuthorizationCredentials | None) -> Principal | None:
    """:func:`authenticate` from :func:`principal_cache` alone (no database, so on the event loop); None when the
    credential is not cached (or there is none): then :func:`authenticate` decides."""
    token_value = bearer.credentials if bearer is not None else None
    if token_value is None and not cookie:
        return None
    found = principal_cache(request).get(PrincipalCache.key(token_value, cookie))
    return None if found is None else _admit(request, found, cookie, token_value)


def still_signed_in(request: Request) -> Principal | None:
    """The request's principal as it stands *now* (None when its session ended, its token was revoked or its user
    disabled): long responses such as the live stream call it while they run, so a right that ends mid-stream ends
    the stream too. Database reads only, no argon2, never the cache."""
    token_value, cookie = getattr(request.state, "credential", (None, None))
    found = _lookup(access_control(request), token_value, cookie)
    return None if found is None or found.mfa_pending else found.principal


def require(*roles: Role) -> Callable[..., Principal]:
    """A dependency admitting signed-in users whose role is in ``roles`` (any role when none are given)."""
    allowed = frozenset(roles)

    async def dependency(request: Request, cookie: Annotated[str | None, Security(_cookie)] = None,
                         bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None
                         ) -> Principal:
        # async: a cached principal is admitted on the event loop, and only a lookup takes a worker thread
        principal = authenticate_cached(request, cookie, bearer)
        if principal is None:
            principal = await run_in_threadpool(authenticate, request, cookie, bearer)
        if allowed and principal.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise HTTPException(403, f"your role ({principal.role.value}) may not do this; it needs: {names}")
        return principal

    dependency.__name__ = f"require_{'_'.join(sorted(r.value for r in allowed)) or 'any'}"
    return dependency


def require_camera(principal: Principal, camera: str) -> None:
    if not principal.can_see(camera):
        raise HTTPException(404, f"no camera named '{camera}'")


def audit(request: Request, principal: Principal | None, action: str, target: str = "", outcome: str = "ok",
          **details: Any) -> None:
    access_control(request).audit_log.append(
        action, user=principal.username if principal else "", role=principal.role.value if principal else "",
        credential=principal.credential_id if principal else "", client=client_address(request),
        target=target, outcome=outcome, details=details)
