"""``/api/me``: the signed-in user — who am I, MFA enrolment, password change, my API tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import Field

from trustcam.security import totp
from trustcam.security.credentials import csrf_token
from trustcam.security.errors import SecurityError
from trustcam.security.roles import Role
from trustcam.web.auth import Principal, access_control, audit, client_address, http_errors, require
from trustcam.web.models import ApiModel
from trustcam.web.routers.users import TokenOut, token_list

router = APIRouter(prefix="/api/me", tags=["me"])
AnyUser = Annotated[Principal, Depends(require())]


class MeOut(ApiModel):
    username: str
    role: Role
    cameras: list[str] | None = Field(description="Cameras granted; null means all.")
    mfa_enrolled: bool
    mfa_required: bool
    csrf_token: str | None = Field(description="For X-CSRF-Token (null when signed in with an API token).")
    via: str = Field(description="'session' or 'token'.")
    unmasked: bool = Field(False, description="Sees cameras' privacy-masked areas (granted per user by an admin).")
    biometrics: bool = Field(False, description="Sees faces unblurred and recognised identities (granted per user "
                             "by an admin).")


class EnrollOut(ApiModel):
    secret: str = Field(description="Base32 TOTP secret (for manual entry).")
    otpauth_uri: str
    qr_svg: str = Field(description="The otpauth URI as an inline SVG QR code.")


class CodeIn(ApiModel):
    code: str = Field(max_length=16, description="The current 6-digit code from the authenticator app.")


class RecoveryOut(ApiModel):
    recovery_codes: list[str] = Field(description="One-time codes for a lost device. Shown once: store them offline.")


class PasswordIn(ApiModel):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


class TokenIn(ApiModel):
    name: str = Field(max_length=64, description="What the token is for, e.g. 'prometheus'.")
    days: int = Field(ge=1, description="Lifetime in days (at most server.api_token_max_days).")
    role: Role | None = Field(None, description="Role of the token, at most yours (default: yours).")
    password: str = Field(max_length=1024, description="Your current password: a stolen session alone cannot "
                          "mint a long-lived credential. Wrong: 403, counted like a failed login.")
    code: str | None = Field(None, max_length=32, description="With MFA: a current 6-digit TOTP code (or a "
                             "recovery code).")


class NewTokenOut(ApiModel):
    token: str = Field(description="tc_<id>_<secret>; shown once. Send it as 'Authorization: Bearer <token>'.")
    info: TokenOut


@router.get("", response_model=MeOut)
def me(request: Request, principal: AnyUser) -> MeOut:
    service = access_control(request)
    with http_errors():
        user = service.users.need(principal.username)
    secret = getattr(request.state, "session_secret", None)
    return MeOut(username=user.username, role=principal.role,
                 cameras=None if user.cameras is None else sorted(user.cameras), mfa_enrolled=user.mfa_enabled,
                 mfa_required=service.mfa_required(user), csrf_token=csrf_token(secret) if secret else None,
                 via=principal.via, unmasked=user.unmasked, biometrics=user.biometrics)


@router.post("/mfa/enroll", response_model=EnrollOut)
def mfa_enroll(request: Request, principal: AnyUser) -> EnrollOut:
    """Start TOTP enrolment: scan the QR code, then confirm with a code. Not active until confirmed."""
    service = access_control(request)
    with http_errors():
        secret = service.users.start_enrolment(service.users.need(principal.username))
    uri, svg = totp.provisioning(secret, principal.username)
    audit(request, principal, "mfa.enroll", principal.username)
    return EnrollOut(secret=secret, otpauth_uri=uri, qr_svg=svg)


@router.post("/mfa/confirm", response_model=RecoveryOut)
def mfa_confirm(body: CodeIn, request: Request, principal: AnyUser) -> RecoveryOut:
    """Activate TOTP with a current code; answers 10 one-time recovery codes (never shown again)."""
    service = access_control(request)
    try:
        codes = service.users.confirm_enrolment(service.users.need(principal.username), body.code)
    except SecurityError as exc:
        audit(request, principal, "mfa.confirm", principal.username, outcome="failed")
        raise HTTPException(exc.status, exc.detail) from None
    audit(request, principal, "mfa.confirm", principal.username)
    return RecoveryOut(recovery_codes=codes)


@router.post("/password", status_code=204, response_class=Response)
def change_password(body: PasswordIn, request: Request, principal: AnyUser) -> Response:
    """Change your password; every session and API token of yours ends (log in again, create new tokens).
    A wrong current password is audited and counts like a failed login."""
    service = access_control(request)
    with http_errors():
        user = service.users.need(principal.username)
        service.reauthenticate(user, body.current_password, None, client_address(request), "password.change",
                               need_code=False)
        service.users.set_password(user, body.new_password)
    audit(request, principal, "password.change", principal.username)
    return Response(status_code=204)


@router.get("/tokens", response_model=list[TokenOut])
def my_tokens(request: Request, principal: AnyUser) -> list[TokenOut]:
    return token_list(access_control(request), principal.user_id)


@router.post("/tokens", status_code=201, response_model=NewTokenOut)
def create_token(body: TokenIn, request: Request, principal: AnyUser) -> NewTokenOut:
    """Create an API token (role at most yours, lifetime at most server.api_token_max_days); shown once.
    Needs your password again (and a current code with MFA)."""
    service = access_control(request)
    with http_errors():
        owner = service.users.need(principal.username)
        # a token's holder may mint no more than the token's role, not its owner's
        service.credentials.check_token_request(principal.role, body.name, body.days,
                                                service.settings.server.api_token_max_days, body.role)
        service.reauthenticate(owner, body.password, body.code, client_address(request), "token.create")
        value, info = service.credentials.create_token(owner.id, principal.role, body.name, body.days,
                                                       service.settings.server.api_token_max_days, body.role)
    audit(request, principal, "token.create", info.id, name=info.name, role=info.role.value, days=body.days)
    return NewTokenOut(token=value, info=TokenOut.of(info, owner.username))


@router.delete("/tokens/{token_id}", status_code=204, response_class=Response)
def revoke_token(token_id: str, request: Request, principal: AnyUser) -> Response:
    with http_errors():
        access_control(request).credentials.revoke_token(token_id, principal.user_id)
    audit(request, principal, "token.revoke", token_id)
    return Response(status_code=204)
