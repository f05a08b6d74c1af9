"""Authentication and authorisation for every route (the contract the routers import).

Every router declares its roles with ``Depends(require(...))``; nothing else checks permissions.

    principal: Principal = Depends(require(Role.viewer, Role.operator, Role.admin))

- ``require(*roles)`` returns a FastAPI dependency that authenticates the request (session cookie
  ``trustcam_session`` or ``Authorization: Bearer <api token>``), answers 401 ``{"detail": ...}`` when there is
  none or it expired, 403 when the principal's role is not among ``roles`` (or its session still has to enrol
  MFA), and for cookie sessions on unsafe methods (POST/PUT/PATCH/DELETE) checks the ``X-CSRF-Token`` header
  against the session's CSRF token (403 otherwise). It returns the :class:`Principal`. ``require()`` with no
  role admits any signed-in user.
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
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from trustcam.security.access import AccessControl
from trustcam.security.credentials import csrf_token, public_id
from trustcam.security.errors import SecurityError
from trustcam.security.roles import Role

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
    service = ctx.extras.get("access_control")
    if service is None:
        with _lock:
            service = ctx.extras.get("access_control")
            if service is None:
                service = ctx.extras["access_control"] = (  # `trustcam run`: the service's, with its witness
                    ctx.service.access_control() if ctx.service is not None
                    else AccessControl(ctx.settings, ctx.engine))
    return service  # type: ignore[no-any-return]


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


def _lookup(service: AccessControl, bearer: str | None, cookie: str | None
            ) -> tuple[Principal, bool] | None:
    """The principal behind a bearer token or session cookie (database reads only, no argon2), with whether its
    session must still enrol MFA; None when the credential is unknown, expired, revoked or its user disabled."""
    if bearer is not None:
        found = service.by_token(bearer)
        if found is None:
            return None
        user, token = found
        return Principal(user.id, user.username, token.role, user.cameras, "token", f"token:{token.id}",
                         user.unmasked, user.biometrics), False
    if cookie:
        found_session = service.by_session(cookie)
        if found_session is None:
            return None
        user, session = found_session
        return (Principal(user.id, user.username, user.role, user.cameras, "session", public_id(session.digest),
                          user.unmasked, user.biometrics), service.mfa_pending(user))
    return None


def authenticate(request: Request, cookie: str | None, bearer: HTTPAuthorizationCredentials | None) -> Principal:
    """Who is asking (bearer token first, then the session cookie), with MFA-enrolment and CSRF checks."""
    service = access_control(request)
    if bearer is None and not cookie:
        raise _unauthenticated("not signed in: log in (POST /api/auth/login) or send 'Authorization: Bearer "
                               "<api token>'")
    token_value = bearer.credentials if bearer is not None else None
    found = _lookup(service, token_value, cookie)
    if found is None and token_value is not None:
        raise _unauthenticated("API token invalid, expired or revoked (or its role needs MFA and its owner has "
                               "none); create a new one (POST /api/me/tokens)")
    if found is None:
        raise _unauthenticated("session expired or ended; log in again (POST /api/auth/login)")
    principal, mfa_pending = found
    if principal.via == "session":
        if mfa_pending and request.url.path not in ENROLMENT_PATHS:
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


def still_signed_in(request: Request) -> Principal | None:
    """The request's principal as it stands *now* (None when its session ended, its token was revoked or its user
    disabled): long responses such as the live stream call it while they run, so a right that ends mid-stream ends
    the stream too. Database reads only, no argon2."""
    token_value, cookie = getattr(request.state, "credential", (None, None))
    found = _lookup(access_control(request), token_value, cookie)
    return None if found is None or found[1] else found[0]


def require(*roles: Role) -> Callable[..., Principal]:
    """A dependency admitting signed-in users whose role is in ``roles`` (any role when none are given)."""
    allowed = frozenset(roles)

    def dependency(request: Request, cookie: Annotated[str | None, Security(_cookie)] = None,
                   bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None) -> Principal:
        principal = authenticate(request, cookie, bearer)
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
