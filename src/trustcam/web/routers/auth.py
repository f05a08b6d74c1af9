"""``/api/auth``: first-admin setup, login (password, then TOTP or a recovery code) and logout."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field

from trustcam.security.access import LoginResult
from trustcam.security.credentials import csrf_token, digest
from trustcam.web.auth import SESSION_COOKIE, Principal, access_control, audit, client_address, http_errors, require
from trustcam.web.models import ApiModel

router = APIRouter(prefix="/api/auth", tags=["auth"])



class SetupRequest(ApiModel):
    setup_token: str = Field(max_length=200, description="Printed by `trustcam run` at first start.")
    username: str = Field(max_length=64, description="The first admin's user name.")
    password: str = Field(max_length=1024, description="At least 12 characters, zxcvbn strength 3 or more.")


class SetupState(ApiModel):
    setup_required: bool = Field(description="True only while no user exists: the first admin must be created.")


class SetupResponse(ApiModel):
    username: str
    role: str


class LoginRequest(ApiModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)


class MfaRequest(ApiModel):
    challenge: str = Field(max_length=200, description="From the login answer.")
    code: str = Field(max_length=32, description="6-digit TOTP code, or a recovery code (xxxx-xxxx-xxxx-xxxx).")


class LoginResponse(ApiModel):
    mfa_required: bool = Field(description="True: send the challenge and a code to POST /api/auth/mfa.")
    challenge: str | None = None
    username: str | None = None
    role: str | None = None
    csrf_token: str | None = Field(None, description="Send it as X-CSRF-Token on POST/PUT/PATCH/DELETE.")
    mfa_enrolment_required: bool = Field(
        False, description="The session can only enrol MFA (POST /api/me/mfa/enroll) until it is confirmed.")


def _session_answer(request: Request, response: Response, result: LoginResult) -> LoginResponse:
    service = access_control(request)
    if result.session is None:
        return LoginResponse(mfa_required=True, challenge=result.challenge)
    response.set_cookie(SESSION_COOKIE, result.session, max_age=int(service.credentials.max_s), path="/",
                        secure=True, httponly=True, samesite="strict")
    return LoginResponse(mfa_required=False, username=result.user.username, role=result.user.role.value,
                         csrf_token=csrf_token(result.session),
                         mfa_enrolment_required=service.mfa_pending(result.user))


@router.get("/setup", response_model=SetupState)
def setup_state(request: Request) -> SetupState:
    """Public: whether the first admin still has to be created (the login screen then shows the first-start form).
    It reveals nothing else: no user name, no count."""
    return SetupState(setup_required=access_control(request).users.count() == 0)


@router.post("/setup", status_code=201, response_model=SetupResponse)
def setup(body: SetupRequest, request: Request) -> SetupResponse:
    """Create the first admin with the one-time setup token; refused (409) once any user exists."""
    with http_errors():
        user = access_control(request).setup(body.setup_token, body.username.strip().lower(), body.password,
                                             client_address(request))
    return SetupResponse(username=user.username, role=user.role.value)


@router.post("/login", response_model=LoginResponse, response_model_exclude_none=True)
def login(body: LoginRequest, request: Request, response: Response) -> LoginResponse:
    """Check the password; answers a session (cookie + CSRF token) or a challenge for the second factor."""
    with http_errors():
        result = access_control(request).login(body.username, body.password, client_address(request))
    return _session_answer(request, response, result)


@router.post("/mfa", response_model=LoginResponse, response_model_exclude_none=True)
def mfa(body: MfaRequest, request: Request, response: Response) -> LoginResponse:
    """Second step of a login: a current TOTP code or an unused recovery code."""
    with http_errors():
        result = access_control(request).second_factor(body.challenge, body.code, client_address(request))
    return _session_answer(request, response, result)


@router.post("/logout", status_code=204, response_class=Response)
def logout(request: Request, principal: Annotated[Principal, Depends(require())]) -> Response:
    """End this session (a bearer token is unaffected: revoke it with DELETE /api/me/tokens/{id})."""
    if principal.via == "session":
        access_control(request).credentials.close_session(digest(request.state.session_secret))
    audit(request, principal, "logout")
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response
