"""The persisted outbox: one row per (alert, sink), written before any delivery attempt.

A crash, a broker outage or a receiver that is down loses nothing: rows stay ``pending`` until a sink
confirms them (``delivered``) or gives up (``dead``, the dead-letter queue, replayed by ``trustcam alerts replay``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import JSON, Engine, Float, Integer, String, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from trustcam.alerts.model import Alert
from trustcam.redaction import redact_urls
from trustcam.storage.schema import Base

State = Literal["pending", "delivered", "dead"]
CLAIM_LEASE_S = 60.0  # a claimed row is due again this long after its worker died mid-delivery


def stored_error(error: str) -> str:
    """What is kept of a delivery error: URLs redacted (a webhook URL often carries its token in the query string,
    and dead letters are listed to admins and in the CLI), cut to the column's 1024 characters."""
    return redact_urls(error)[:1024]


class OutboxRow(Base):
    """One delivery of one alert to one sink (columns: see migration 0003)."""

    __tablename__ = "alert_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(String(32), index=True)
    sink: Mapped[str] = mapped_column(String(80))
    kind: Mapped[str] = mapped_column(String(32))
    camera: Mapped[str | None] = mapped_column(String(63), nullable=True)
    severity: Mapped[str] = mapped_column(String(16))
    alert: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    created: Mapped[float] = mapped_column(Float, index=True)
    delivered_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    latency: Mapped[float | None] = mapped_column(Float, nullable=True)


@dataclass(frozen=True)
class Delivery:
    """A detached copy of a row, safe to hand to another thread."""

    id: int
    alert: Alert
    sink: str
    state: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created: float
    delivered_at: float | None
    latency: float | None

    @classmethod
    def of(cls, row: OutboxRow) -> Delivery:
        error = None if row.last_error is None else redact_urls(row.last_error)  # rows stored before redaction
        return cls(row.id, Alert.from_json(row.alert), row.sink, row.state, row.attempts, row.next_attempt_at,
                   error, row.created, row.delivered_at, row.latency)


class Outbox:
    """All reads and writes of the ``alert_outbox`` table; every method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, alert: Alert, sinks: Iterable[str]) -> None:
        """Queue ``alert`` for each sink (idempotent: an alert already queued for a sink is not queued twice)."""
        now = time.time()
        payload = alert.to_json()
        for sink in sinks:
            row = OutboxRow(alert_id=alert.id, sink=sink, kind=alert.kind, camera=alert.camera,
                            severity=alert.severity.value, alert=payload, state="pending", attempts=0,
                            next_attempt_at=now, created=now)
            try:
                with Session(self.engine) as session, session.begin():
                    session.add(row)
            except IntegrityError:
                continue

    def due(self, sink: str, now: float, limit: int = 50) -> list[Delivery]:
        """Pending rows of ``sink`` whose time has come, oldest first (the order alerts were raised)."""
        query = (select(OutboxRow).where(OutboxRow.sink == sink, OutboxRow.state == "pending",
                                         OutboxRow.next_attempt_at <= now)
                 .order_by(OutboxRow.id).limit(limit))
        with Session(self.engine) as session:
            return [Delivery.of(row) for row in session.scalars(query)]

    def claim(self, sink: str, now: float, limit: int = 50, lease_s: float = CLAIM_LEASE_S) -> list[Delivery]:
        """Take the due rows of ``sink`` for this worker alone, so that several dispatchers (processes sharing a
        PostgreSQL database) never deliver one alert twice: in one transaction the rows are locked
        ``FOR UPDATE SKIP LOCKED`` (a concurrent claim skips them instead of waiting, then taking them too) and their
        ``next_attempt_at`` moved ``lease_s`` ahead, only where it still is due (SQLite has no row locks: its
        claims queue on the write lock, and a row another claim took meanwhile is no longer due). ``delivered``,
        ``retry`` and ``dead`` record the outcome, ``release`` hands back rows not attempted; after a crash the
        rows are due again once the lease is over."""
        query = (select(OutboxRow).where(*self._due(sink, now)).order_by(OutboxRow.id).limit(limit)
                 .with_for_update(skip_locked=True))
        with Session(self.engine) as session, session.begin():
            found = [Delivery.of(row) for row in session.scalars(query)]  # copies taken before the lease
            if not found:
                return []
            taken = set(session.scalars(
                update(OutboxRow).where(OutboxRow.id.in_([d.id for d in found]), *self._due(sink, now))
                .values(next_attempt_at=now + lease_s).returning(OutboxRow.id),
                execution_options={"synchronize_session": False}))
        return [delivery for delivery in found if delivery.id in taken]

    @staticmethod
    def _due(sink: str, now: float) -> tuple[ColumnElement[bool], ...]:
        return OutboxRow.sink == sink, OutboxRow.state == "pending", OutboxRow.next_attempt_at <= now

    def release(self, deliveries: Iterable[Delivery]) -> None:
        """Claimed rows not attempted (the sink went away, the worker stops) are due again at their old time."""
        for delivery in deliveries:
            with Session(self.engine) as session, session.begin():
                session.execute(update(OutboxRow).where(OutboxRow.id == delivery.id, OutboxRow.state == "pending")
                                .values(next_attempt_at=delivery.next_attempt_at))

    def next_due(self, sink: str) -> float | None:
        query = select(func.min(OutboxRow.next_attempt_at)).where(OutboxRow.sink == sink,
                                                                    OutboxRow.state == "pending")
        with Session(self.engine) as session:
            return session.scalar(query)

    def delivered(self, row_id: int, attempts: int, latency: float) -> None:
        self._set(row_id, state="delivered", attempts=attempts, delivered_at=time.time(), latency=latency,
                  last_error=None)

    def retry(self, row_id: int, attempts: int, error: str, at: float) -> None:
        self._set(row_id, attempts=attempts, last_error=stored_error(error), next_attempt_at=at)

    def dead(self, row_id: int, attempts: int, error: str) -> None:
        self._set(row_id, state="dead", attempts=attempts, last_error=stored_error(error))

    def _set(self, row_id: int, **values: Any) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(update(OutboxRow).where(OutboxRow.id == row_id).values(**values))

    def rows(self, state: State | None = None, sink: str | None = None, alert_id: str | None = None,
             row_id: int | None = None) -> list[Delivery]:
        query = select(OutboxRow).order_by(OutboxRow.id)
        if row_id is not None:
            query = query.where(OutboxRow.id == row_id)
        if state is not None:
            query = query.where(OutboxRow.state == state)
        if sink is not None:
            query = query.where(OutboxRow.sink == sink)
        if alert_id is not None:
            query = query.where(OutboxRow.alert_id == alert_id)
        with Session(self.engine) as session:
            return [Delivery.of(row) for row in session.scalars(query)]

    def recent_alerts(self, limit: int = 100) -> list[Alert]:
        """The newest queued alerts, newest first, each once (one row per sink): the alerts page of a process whose
        bus does not see them (``trustcam cluster``: cameras raise alerts in other processes)."""
        query = select(OutboxRow.alert_id, OutboxRow.alert).order_by(OutboxRow.id.desc()).limit(limit * 8)
        seen: dict[str, Alert] = {}
        with Session(self.engine) as session:
            for alert_id, payload in session.execute(query):
                if alert_id not in seen:
                    seen[alert_id] = Alert.from_json(payload)
        return sorted(seen.values(), key=lambda a: a.time, reverse=True)[:limit]

    def replay(self, row_ids: Iterable[int] | None = None) -> list[int]:
        """Dead rows back to pending with fresh attempts (all of them when ``row_ids`` is None); returns their ids."""
        query = select(OutboxRow.id).where(OutboxRow.state == "dead")
        if row_ids is not None:
            query = query.where(OutboxRow.id.in_(list(row_ids)))
        with Session(self.engine) as session, session.begin():
            ids = list(session.scalars(query))
            if ids:
                session.execute(update(OutboxRow).where(OutboxRow.id.in_(ids))
                                .values(state="pending", attempts=0, next_attempt_at=time.time()))
        return ids

    def counts(self) -> dict[tuple[str, str], int]:
        """Rows per (sink, state), for heartbeats and metrics."""
        query = select(OutboxRow.sink, OutboxRow.state, func.count()).group_by(OutboxRow.sink, OutboxRow.state)
        with Session(self.engine) as session:
            return {(sink, state): n for sink, state, n in session.execute(query)}
