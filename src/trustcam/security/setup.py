"""First start: with no user yet, a one-time setup token (file ``<data_dir>/setup-token``, 0600) lets whoever
can read the server's disk create the first admin through ``POST /api/auth/setup``. There is no default
password; the token is deleted as soon as it is used or once any user exists."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from trustcam.config.schema import Settings
from trustcam.security.tables import UserRow
from trustcam.storage.private import private_dir


def token_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "setup-token"


def _users(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(UserRow)) or 0)


def ensure_setup_token(settings: Settings, engine: Engine | None = None) -> str | None:
    """The setup token to print at start-up, created if needed; None once any user exists (file removed)."""
    if engine is None:
        from trustcam.storage.database import open_database

        engine = open_database(settings.resolved_database_url)
    path = token_path(settings)
    if _users(engine):
        path.unlink(missing_ok=True)
        return None
    if path.exists():
        token = path.read_text().strip()
        if len(token) >= 32:
            return token
        path.unlink()
    private_dir(path.parent)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def check_setup_token(settings: Settings, token: str) -> bool:
    path = token_path(settings)
    try:
        expected = path.read_text().strip()
    except OSError:
        return False
    return len(expected) >= 32 and hmac.compare_digest(expected.encode(), token.strip().encode())


def consume_setup_token(settings: Settings) -> None:
    token_path(settings).unlink(missing_ok=True)
