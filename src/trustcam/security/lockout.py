"""Login throttling: after N failures for a user name, or from one address, within the lockout period, every
login attempt for it is refused (429 + Retry-After) for ``lockout_minutes`` — even with the right password."""

from __future__ import annotations

import math
import time
from typing import Any

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from trustcam.security.tables import LoginAttemptRow


class Lockout:
    def __init__(self, engine: Engine, max_failures: int, lockout_s: float) -> None:
        self.engine = engine
        self.max_failures = max_failures
        self.lockout_s = lockout_s

    def _column(self, scope: str) -> Any:
        return LoginAttemptRow.username if scope == "user" else LoginAttemptRow.client

    def retry_after(self, username: str, client: str) -> int | None:
        """Seconds until the lockout of this user name or address ends; None when not locked out."""
        now = time.time()
        ends: list[float] = []
        with Session(self.engine) as session:
            for scope, value in (("user", username), ("client", client)):
                started = session.scalar(select(func.max(LoginAttemptRow.time)).where(
                    self._column(scope) == value, LoginAttemptRow.kind == "lockout",
                    LoginAttemptRow.scope == scope))
                if started is not None and started + self.lockout_s > now:
                    ends.append(started + self.lockout_s)
        return max(1, math.ceil(max(ends) - now)) if ends else None

    def failure(self, username: str, client: str) -> list[str]:
        """Record a failed attempt; returns the scopes ("user", "client") that this failure locked out."""
        now = time.time()
        locked: list[str] = []
        with Session(self.engine) as session, session.begin():
            session.execute(delete(LoginAttemptRow).where(LoginAttemptRow.time < now - max(self.lockout_s, 86400)))
            session.add(LoginAttemptRow(time=now, username=username[:64], client=client[:64], kind="failure",
                                        scope=""))
            session.flush()
            for scope, value in (("user", username[:64]), ("client", client[:64])):
                column = self._column(scope)
                last_lock = session.scalar(select(func.max(LoginAttemptRow.time)).where(
                    column == value, LoginAttemptRow.kind == "lockout",
                    LoginAttemptRow.scope == scope)) or 0.0
                since = max(now - self.lockout_s, last_lock)
                failures = session.scalar(select(func.count()).select_from(LoginAttemptRow).where(
                    column == value, LoginAttemptRow.kind == "failure",
                    LoginAttemptRow.time > since)) or 0
                if failures >= self.max_failures:
                    session.add(LoginAttemptRow(time=now, username=username[:64], client=client[:64],
                                                kind="lockout", scope=scope))
                    locked.append(scope)
        return locked

    def success(self, username: str) -> None:
        """A full login clears the user's failure count (an address's failures stay: they may be other users')."""
        with Session(self.engine) as session, session.begin():
            session.execute(delete(LoginAttemptRow).where(LoginAttemptRow.username == username,
                                                          LoginAttemptRow.kind == "failure"))
