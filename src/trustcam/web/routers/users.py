"""Admin: ``/api/users`` (accounts, roles, camera grants, disable, MFA reset) and ``/api/tokens`` (every token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field

from trustcam.security.access import AccessControl
from trustcam.security.credentials import TokenInfo
from trustcam.security.errors import SecurityError
from trustcam.security.roles import Role
from trustcam.security.users import User
from trustcam.web.auth import Principal, access_control, audit, http_errors, require
from trustcam.web.models import ApiModel

router = APIRouter(tags=["users"])
Admin = Annotated[Principal, Depends(require(Role.admin))]
UNMASKED_HELP = ("See behind cameras' privacy masks (live, snapshots, clips) and export their evidence; no role "
                 "implies it, admins included.")
BIOMETRICS_HELP = ("See faces unblurred (live, snapshots, clips) and recognised identities on cameras with face "
                   "recognition, and export their evidence; no role implies it, admins included.")



class UserOut(ApiModel):
    username: str
    role: Role
    cameras: list[str] | None = Field(description="Cameras granted; null means all.")
    mfa_enrolled: bool
    disabled: bool
    unmasked: bool = Field(description="Sees behind cameras' privacy masks and may export their evidence.")
    biometrics: bool = Field(description="Sees faces unblurred and identities on face-recognition cameras.")
    created: float
    updated: float

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(username=user.username, role=user.role, cameras=None if user.cameras is None
                   else sorted(user.cameras), mfa_enrolled=user.mfa_enabled, disabled=user.disabled,
                   unmasked=user.unmasked, biometrics=user.biometrics, created=user.created, updated=user.updated)


class UserCreate(ApiModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024, description="At least 12 characters, zxcvbn strength 3 or more.")
    role: Role
    cameras: list[str] | None = Field(None, description="Cameras granted; null or absent means all.")
    unmasked: bool = Field(False, description=UNMASKED_HELP)
    biometrics: bool = Field(False, description=BIOMETRICS_HELP)


class UserPatch(ApiModel):
    role: Role | None = None
    cameras: list[str] | None = Field(None, description="Cameras granted; null means all (omit to keep).")
    disabled: bool | None = Field(None, description="True ends every session and refuses logins.")
    reset_mfa: bool = Field(False, description="Forget the user's TOTP and recovery codes; they enrol again.")
    unmasked: bool | None = Field(None, description=UNMASKED_HELP + " Omit to keep.")
    biometrics: bool | None = Field(None, description=BIOMETRICS_HELP + " Omit to keep.")


class TokenOut(ApiModel):
    id: str
    username: str
    name: str
    role: Role
    created: float
    expires: float
    last_used: float | None
    revoked: float | None

    @classmethod
    def of(cls, token: TokenInfo, username: str) -> TokenOut:
        return cls(id=token.id, username=username, name=token.name, role=token.role, created=token.created,
                   expires=token.expires, last_used=token.last_used, revoked=token.revoked)


def _known_cameras(request: Request, cameras: list[str] | None) -> None:
    known = set(request.app.state.ctx.settings.cameras)
    if cameras is not None and (unknown := sorted(set(cameras) - known)):
        raise SecurityError(422, f"unknown camera(s): {', '.join(unknown)}; configured: "
                            f"{', '.join(sorted(known)) or 'none'}")


def token_list(service: AccessControl, user_id: int | None = None) -> list[TokenOut]:
    names = {u.id: u.username for u in service.users.all()}
    return [TokenOut.of(t, names.get(t.user_id, "?")) for t in service.credentials.tokens(user_id)]


@router.get("/api/users", response_model=list[UserOut])
def list_users(request: Request, principal: Admin) -> list[UserOut]:
    return [UserOut.of(u) for u in access_control(request).users.all()]


@router.post("/api/users", status_code=201, response_model=UserOut)
def create_user(body: UserCreate, request: Request, principal: Admin) -> UserOut:
    service = access_control(request)
    with http_errors():
        _known_cameras(request, body.cameras)
        user = service.users.create(body.username.strip().lower(), body.password, body.role, body.cameras,
                                    unmasked=body.unmasked, biometrics=body.biometrics)
    audit(request, principal, "user.create", user.username, role=user.role.value, cameras=body.cameras,
          unmasked=user.unmasked, biometrics=user.biometrics)
    return UserOut.of(user)


@router.patch("/api/users/{username}", response_model=UserOut)
def change_user(username: str, body: UserPatch, request: Request,
                principal: Admin) -> UserOut:
    service = access_control(request)
    with http_errors():
        user = service.users.need(username)
        if "cameras" in body.model_fields_set:
            _known_cameras(request, body.cameras)
        user = service.users.update(user, role=body.role,
                                    cameras=body.cameras if "cameras" in body.model_fields_set else False,
                                    disabled=body.disabled, unmasked=body.unmasked, biometrics=body.biometrics)
        if body.reset_mfa:
            service.users.reset_mfa(user)
            audit(request, principal, "mfa.reset", user.username)
            user = service.users.need(username)
    changes = body.model_dump(exclude_unset=True, mode="json")
    changes.pop("reset_mfa", None)
    if changes.pop("unmasked", None) is not None:  # its own action: auditors look for who may see behind masks
        audit(request, principal, "unmasked.grant" if body.unmasked else "unmasked.revoke", user.username)
    if changes.pop("biometrics", None) is not None:  # likewise: who may see faces and identities
        audit(request, principal, "biometrics.grant" if body.biometrics else "biometrics.revoke", user.username)
    if changes:
        audit(request, principal, "user.change", user.username, **changes)
    return UserOut.of(user)


@router.delete("/api/users/{username}", status_code=204, response_class=Response)
def delete_user(username: str, request: Request, principal: Admin) -> Response:
    service = access_control(request)
    with http_errors():
        service.users.delete(service.users.need(username))
    audit(request, principal, "user.delete", username)
    return Response(status_code=204)


@router.get("/api/tokens", response_model=list[TokenOut])
def list_tokens(request: Request, principal: Admin) -> list[TokenOut]:
    return token_list(access_control(request))


@router.delete("/api/tokens/{token_id}", status_code=204, response_class=Response)
def revoke_any_token(token_id: str, request: Request, principal: Admin) -> Response:
    with http_errors():
        access_control(request).credentials.revoke_token(token_id)
    audit(request, principal, "token.revoke", token_id)
    return Response(status_code=204)
