"""Helpers for the security tests: a real app (``create_app``) on a real SQLite file, real users with real TOTP."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
from fastapi.testclient import TestClient

from trustcam.bus import Bus
from trustcam.config.schema import Settings
from trustcam.security.access import AccessControl
from trustcam.security.roles import Role
from trustcam.storage.database import open_database
from trustcam.web.app import create_app
from trustcam.web.auth import access_control
from trustcam.web.context import AppContext

PASSWORD = "correct horse battery staple 42"  # zxcvbn 4; never appears in logs or the audit log


def make_settings(tmp_path: Path, video: Path | None = None, *, database_url: str | None = None,
                  **server: Any) -> Settings:
    """``database_url``: None for the default SQLite file in data_dir, or the ``database_url`` fixture's URL."""
    cameras = {}
    if video is not None:
        cameras = {"office": {"source": str(video)}, "yard": {"source": str(video)}}
    keys = tmp_path / "keys"  # never the real ~/.config/trustcam
    return Settings.model_validate({
        "data_dir": str(tmp_path / "data"), "database_url": database_url,
        "server": {"auth_key_file": str(keys / "auth.key"), **server},
        "vault": {"key_file": str(keys / "vault.kek"), "signing_key_file": str(keys / "vault-signing.key")},
        "cameras": cameras})


@dataclass
class Harness:
    settings: Settings
    ctx: AppContext
    client: TestClient
    codes_used: dict[str, int] = field(default_factory=dict)

    @property
    def service(self) -> AccessControl:
        return self.ctx.extras["access_control"]  # type: ignore[no-any-return]

    def new_client(self) -> TestClient:
        return TestClient(self.client.app, base_url="https://testserver")


def harness(tmp_path: Path, video: Path | None = None, *, database_url: str | None = None, **server: Any) -> Harness:
    settings = make_settings(tmp_path, video, database_url=database_url, **server)
    engine = open_database(settings.resolved_database_url)
    ctx = AppContext(settings=settings, engine=engine, bus=Bus())
    app = create_app(ctx)
    client = TestClient(app, base_url="https://testserver")

    class _Req:  # access_control() only reads request.app.state.ctx
        def __init__(self) -> None:
            self.app = app

    access_control(_Req())  # type: ignore[arg-type]
    return Harness(settings, ctx, client)


def next_code(h: Harness, username: str, secret: str) -> str:
    """A TOTP code the server has not seen yet for this user (steps move forward within the ±1 window)."""
    current = int(time.time() // 30)
    step = max(current - 1, h.codes_used.get(username, current - 2) + 1)
    if step > current + 1:
        time.sleep((step - 1) * 30 - time.time() + 0.2)
    h.codes_used[username] = step
    return pyotp.TOTP(secret).at(step * 30)


def add_user(h: Harness, username: str, role: Role, cameras: list[str] | None = None, mfa: bool = True) -> str | None:
    """Create a user directly in the store; with ``mfa`` enrol TOTP as the user would. Returns the TOTP secret."""
    user = h.service.users.create(username, PASSWORD, role, cameras)
    if not mfa:
        return None
    secret = h.service.users.start_enrolment(user)
    h.service.users.confirm_enrolment(user, next_code(h, username, secret))
    return secret


def login(h: Harness, client: TestClient, username: str, secret: str | None) -> str:
    """Full login (password, then TOTP); returns the CSRF token. The session cookie stays in ``client``."""
    answer = client.post("/api/auth/login", json={"username": username, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    if body["mfa_required"]:
        assert secret is not None
        answer = client.post("/api/auth/mfa", json={"challenge": body["challenge"],
                                                    "code": next_code(h, username, secret)})
        assert answer.status_code == 200, answer.text
        body = answer.json()
    return str(body["csrf_token"])
