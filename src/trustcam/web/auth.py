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

import hmac
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
                service = ctx.extras["access_control"] = AccessControl(ctx.settings, ctx.engine)
    return service  # type: ignore[no-any-return]


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


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


def authenticate(request: Request, cookie: str | None, bearer: HTTPAuthorizationCredentials | None) -> Principal:
    """Who is asking (bearer token first, then the session cookie), with MFA-enrolment and CSRF checks."""
    service = access_control(request)
    if bearer is not None:
        found = service.by_token(bearer.credentials)
        if found is None:
            raise _unauthenticated("API token invalid, expired or revoked; create a new one (POST /api/me/tokens)")
        user, token = found
        principal = Principal(user.id, user.username, token.role, user.cameras, "token", f"token:{token.id}")
    elif cookie:
        found_session = service.by_session(cookie)
        if found_session is None:
            raise _unauthenticated("session expired or ended; log in again (POST /api/auth/login)")
        user, session = found_session
        principal = Principal(user.id, user.username, user.role, user.cameras, "session", public_id(session.digest))
        if service.mfa_pending(user) and request.url.path not in ENROLMENT_PATHS:
            raise HTTPException(403, f"your role ({user.role.value}) requires two-factor authentication: enrol first "
                                "with POST /api/me/mfa/enroll, then POST /api/me/mfa/confirm")
        if request.method in UNSAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), csrf_token(cookie).encode()):
                raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header; send the csrf_token from the login "
                                    "answer or GET /api/me")
    else:
        raise _unauthenticated("not signed in: log in (POST /api/auth/login) or send 'Authorization: Bearer "
                               "<api token>'")
    request.state.principal = principal
    request.state.session_secret = cookie if principal.via == "session" else None
    return principal


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
