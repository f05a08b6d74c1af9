"""Human feedback on events: acknowledgements and true/false-positive verdicts, with who and when.

Rows are only ever appended: the latest verdict of an event is its current one and earlier ones stay as
history, so a changed mind is visible. Verdicts are field labels: ``trustcam review stats`` turns them into
precision per camera, label and model, and ``trustcam review export`` hands them to assessment.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, Float, Integer, String, and_, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from trustcam.storage.schema import Base, EventRow


class Verdict(StrEnum):
    true_positive = "true_positive"
    false_positive = "false_positive"


class ReviewRow(Base):
    __tablename__ = "event_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(32), index=True)
    action: Mapped[str] = mapped_column(String(16))  # "ack" or "verdict"
    verdict: Mapped[str | None] = mapped_column(String(16), nullable=True)
    note: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    username: Mapped[str] = mapped_column(String(64))
    time: Mapped[float] = mapped_column(Float, index=True)


@dataclass(frozen=True)
class ReviewState:
    """An event's current acknowledgement and verdict (None when there is none)."""

    acknowledged: dict[str, Any] | None = None
    review: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"acknowledged": self.acknowledged, "review": self.review}


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95% by default): honest bounds even for a handful of reviews."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class PrecisionRow:
    camera: str
    label: str
    model: str
    true_positives: int
    false_positives: int

    @property
    def reviewed(self) -> int:
        return self.true_positives + self.false_positives

    @property
    def precision(self) -> float:
        return self.true_positives / self.reviewed if self.reviewed else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.true_positives, self.reviewed)


class Reviews:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _add(self, row: ReviewRow) -> dict[str, Any]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            session.add(row)
        return _entry(row)

    def acknowledge(self, event_id: str, username: str, user_id: int | None = None) -> dict[str, Any]:
        return self._add(ReviewRow(event_id=event_id, action="ack", username=username, user_id=user_id,
                                   time=time.time()))

    def review(self, event_id: str, verdict: Verdict, username: str, user_id: int | None = None,
               note: str | None = None) -> dict[str, Any]:
        return self._add(ReviewRow(event_id=event_id, action="verdict", verdict=Verdict(verdict).value, note=note,
                                   username=username, user_id=user_id, time=time.time()))

    def states(self, event_ids: list[str]) -> dict[str, ReviewState]:
        """Current acknowledgement and verdict of each event (one query)."""
        if not event_ids:
            return {}
        with Session(self.engine) as session:
            rows = list(session.scalars(select(ReviewRow).where(ReviewRow.event_id.in_(event_ids))
                                        .order_by(ReviewRow.time, ReviewRow.id)))
        acks: dict[str, dict[str, Any]] = {}
        verdicts: dict[str, dict[str, Any]] = {}
        for row in rows:  # later rows overwrite earlier ones: the latest is current
            (acks if row.action == "ack" else verdicts)[row.event_id] = _entry(row)
        return {e: ReviewState(acks.get(e), verdicts.get(e)) for e in event_ids}

    def history(self, event_id: str) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            rows = session.scalars(select(ReviewRow).where(ReviewRow.event_id == event_id)
                                   .order_by(ReviewRow.time, ReviewRow.id))
            return [_entry(row) for row in rows]

    def labelled(self) -> list[tuple[EventRow, ReviewRow]]:
        """Every event with a verdict, paired with its current verdict (oldest event first)."""
        latest = (select(ReviewRow.event_id, func.max(ReviewRow.id).label("last"))
                  .where(ReviewRow.action == "verdict").group_by(ReviewRow.event_id).subquery())
        query = (select(EventRow, ReviewRow)
                 .join(latest, latest.c.event_id == EventRow.id)
                 .join(ReviewRow, and_(ReviewRow.id == latest.c.last))
                 .order_by(EventRow.start))
        with Session(self.engine, expire_on_commit=False) as session:
            return [(event, review) for event, review in session.execute(query).tuples()]

    def precision(self) -> list[PrecisionRow]:
        counts: dict[tuple[str, str, str], list[int]] = {}
        for event, review in self.labelled():
            key = (event.camera, event.label, f"{event.model_name}@{event.model_sha256[:12]}")
            tally = counts.setdefault(key, [0, 0])
            tally[0 if review.verdict == Verdict.true_positive else 1] += 1
        return [PrecisionRow(camera, label, model, tp, fp)
                for (camera, label, model), (tp, fp) in sorted(counts.items())]


def _entry(row: ReviewRow) -> dict[str, Any]:
    entry: dict[str, Any] = {"user": row.username, "time": row.time}
    if row.action == "verdict":
        entry.update(verdict=row.verdict, note=row.note)
    return entry


def reviewed_clause(reviewed: bool) -> Any:
    """A WHERE clause on EventRow: the event has (or has no) verdict."""
    has = select(ReviewRow.id).where(ReviewRow.event_id == EventRow.id, ReviewRow.action == "verdict").exists()
    return has if reviewed else ~has
