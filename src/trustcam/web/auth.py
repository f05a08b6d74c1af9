"""CONTRACT (to be implemented by the security work): authentication and authorisation for every route.

Every router declares its roles with ``Depends(require(...))``; nothing else checks permissions.

    principal: Principal = Depends(require(Role.viewer, Role.operator, Role.admin))

- ``require(*roles)`` returns a FastAPI dependency that authenticates the request (session cookie
  ``trustcam_session`` or ``Authorization: Bearer <api token>``), answers 401 ``{"detail": ...}`` when there is
  none or it expired, 403 when the principal's role is not among ``roles`` (or its session still has to enrol
  MFA), and for cookie sessions on unsafe methods (POST/PUT/PATCH/DELETE) checks the ``X-CSRF-Token`` header
  against the session's CSRF token (403 otherwise). It returns the :class:`Principal`.
- ``require_camera(principal, camera)`` raises 404 when the camera is not granted to the principal (a viewer must
  not learn that other cameras exist).
- ``audit(request, principal, action, target, outcome="ok", **details)`` appends to the hash-chained audit log
  with who, when and from where (client address). Call it for every view of live video, snapshot or clip,
  every export, every config/user change, every review.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Request

from trustcam.security.roles import Role


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


def require(*roles: Role) -> Callable[..., Principal]:
    raise NotImplementedError


def require_camera(principal: Principal, camera: str) -> None:
    raise NotImplementedError


def audit(request: Request, principal: Principal | None, action: str, target: str = "", outcome: str = "ok",
          **details: Any) -> None:
    raise NotImplementedError
