"""Login throttling per (user name, client address) and per address, with lockouts that grow when repeated.

Why per pair and not per user name: a lock on the name alone lets anyone lock the real admin out forever by
sending wrong passwords for "admin". A pair lock stops guessing from that address while the admin, coming from
another address, still logs in. The per-address limit (``address_max_failures``, whatever the names) stops
spraying many names from one address. Each further lockout of the same key within a day lasts twice as long
(capped at 24 h), so a patient attacker gets ever fewer guesses. What stays possible: an attacker with many
addresses gets ``max_failures`` guesses per address per lockout period, and can lock the admin out *from an
address the attacker also uses* (a shared NAT or proxy: configure ``server.trusted_proxies``).

Rows (``LoginAttemptRow``): ``kind="failure"`` for each failed attempt, ``kind="lockout"`` with
``scope="pair"`` (username + client) or ``scope="client"`` (client only) for each lockout started.
"""

from __future__ import annotations

import math
import time

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from trustcam.security.tables import LoginAttemptRow

DAY_S = 86_400.0
MAX_LOCKOUT_S = DAY_S
HISTORY_S = 2 * DAY_S  # failures and lockouts older than this are forgotten


class Lockout:
    def __init__(self, engine: Engine, max_failures: int, lockout_s: float, address_max_failures: int = 20) -> None:
        self.engine = engine
        self.max_failures = max_failures
        self.address_max_failures = address_max_failures
        self.lockout_s = lockout_s

    @staticmethod
    def _key(scope: str, username: str, client: str) -> ColumnElement[bool]:
        where = LoginAttemptRow.client == client[:64]
        return (where & (LoginAttemptRow.username == username[:64])) if scope == "pair" else where

    def _duration(self, session: Session, scope: str, username: str, client: str, started: float) -> float:
        """The lockout that started at ``started`` lasts ``lockout_s`` doubled for each earlier one within a day."""
        earlier = session.scalar(select(func.count()).select_from(LoginAttemptRow).where(
            self._key(scope, username, client), LoginAttemptRow.kind == "lockout", LoginAttemptRow.scope == scope,
            LoginAttemptRow.time < started, LoginAttemptRow.time >= started - DAY_S)) or 0
        return min(self.lockout_s * 2.0 ** min(earlier, 30), max(MAX_LOCKOUT_S, self.lockout_s))

    def _lock_end(self, session: Session, scope: str, username: str, client: str) -> float | None:
        started = session.scalar(select(func.max(LoginAttemptRow.time)).where(
            self._key(scope, username, client), LoginAttemptRow.kind == "lockout", LoginAttemptRow.scope == scope))
        if started is None:
            return None
        return started + self._duration(session, scope, username, client, started)

    def retry_after(self, username: str, client: str) -> int | None:
        """Seconds until this (user name, address) pair or this address may try again; None when not locked."""
        now = time.time()
        with Session(self.engine) as session:
            ends = [end for scope in ("pair", "client")
                    if (end := self._lock_end(session, scope, username, client)) is not None and end > now]
        return max(1, math.ceil(max(ends) - now)) if ends else None

    def failure(self, username: str, client: str) -> list[tuple[str, int]]:
        """Record a failed attempt; returns (scope, seconds) for each lockout this failure started."""
        now = time.time()
        locked: list[tuple[str, int]] = []
        with Session(self.engine) as session, session.begin():
            session.execute(delete(LoginAttemptRow).where(LoginAttemptRow.time < now - max(self.lockout_s, HISTORY_S)))
            session.add(LoginAttemptRow(time=now, username=username[:64], client=client[:64], kind="failure",
                                        scope=""))
            session.flush()
            for scope, limit in (("pair", self.max_failures), ("client", self.address_max_failures)):
                key = self._key(scope, username, client)
                last_lock = session.scalar(select(func.max(LoginAttemptRow.time)).where(
                    key, LoginAttemptRow.kind == "lockout", LoginAttemptRow.scope == scope)) or 0.0
                since = max(now - self.lockout_s, last_lock)
                failures = session.scalar(select(func.count()).select_from(LoginAttemptRow).where(
                    key, LoginAttemptRow.kind == "failure", LoginAttemptRow.time > since)) or 0
                if failures >= limit:
                    session.add(LoginAttemptRow(time=now, username=username[:64], client=client[:64],
                                                kind="lockout", scope=scope))
                    session.flush()
                    locked.append((scope, math.ceil(self._duration(session, scope, username, client, now))))
        return locked

    def success(self, username: str, client: str) -> None:
        """A full login clears this pair's failures and lockout history (the address's other names stay)."""
        with Session(self.engine) as session, session.begin():
            session.execute(delete(LoginAttemptRow).where(self._key("pair", username, client),
                                                          LoginAttemptRow.scope.in_(("", "pair"))))

    def unlock(self, username: str | None = None, client: str | None = None) -> int:
        """Forget failures and lockouts of a user name, an address, or both (`trustcam users unlock`); returns how
        many records were removed. With neither, everything is forgotten. A user name alone lifts that name's
        pair lockouts, not the lockout of an address that sprayed it (name the address for that)."""
        where = []
        if username is not None:
            where.append(LoginAttemptRow.username == username[:64])
            if client is None:
                where.append(LoginAttemptRow.scope.in_(("", "pair")))
        if client is not None:
            where.append(LoginAttemptRow.client == client[:64])
        with Session(self.engine) as session, session.begin():
            return int(session.execute(delete(LoginAttemptRow).where(*where)).rowcount or 0)

    def locked(self) -> list[tuple[str, str, str, int]]:
        """Lockouts in force now: (scope, user name or "", address, seconds left)."""
        now = time.time()
        out: list[tuple[str, str, str, int]] = []
        with Session(self.engine) as session:
            rows = session.execute(select(LoginAttemptRow.scope, LoginAttemptRow.username, LoginAttemptRow.client)
                                   .where(LoginAttemptRow.kind == "lockout").distinct()).all()
            for scope, username, client in rows:
                if scope not in ("pair", "client"):
                    continue
                end = self._lock_end(session, scope, username, client)
                if end is not None and end > now:
                    out.append((scope, username if scope == "pair" else "", client, math.ceil(end - now)))
        return sorted(set(out))
