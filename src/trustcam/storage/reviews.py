"""Human feedback on events: acknowledgements and true/false-positive verdicts, with who and when.

Rows are only ever appended: the latest verdict of an event is its current one and earlier ones stay as
history, so a changed mind is visible. Verdicts are field labels: ``trustcam review stats`` turns them into
precision per camera, label and model, and ``trustcam review export`` hands them to assessment.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, Float, Integer, Row, String, and_, bindparam, func, select
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
        with self.engine.connect() as connection:
            return review_states(connection, event_ids)

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
            return [(event, review) for event, review in session.execute(query).all()]

    def precision(self) -> list[PrecisionRow]:
        counts: dict[tuple[str, str, str], list[int]] = {}
        for event, review in self.labelled():
            key = (event.camera, event.label, f"{event.model_name}@{event.model_sha256[:12]}")
            tally = counts.setdefault(key, [0, 0])
            tally[0 if review.verdict == Verdict.true_positive else 1] += 1
        return [PrecisionRow(camera, label, model, tp, fp)
                for (camera, label, model), (tp, fp) in sorted(counts.items())]


# Only the columns a state shows, as plain rows: mapped ReviewRow objects cost more than the query (events list).
_STATE_QUERY = (select(ReviewRow.event_id, ReviewRow.action, ReviewRow.verdict, ReviewRow.note, ReviewRow.username,
                       ReviewRow.time)
                .where(ReviewRow.event_id.in_(bindparam("event_ids", expanding=True)))
                .order_by(ReviewRow.time, ReviewRow.id))


def review_states(connection: Connection, event_ids: list[str]) -> dict[str, ReviewState]:
    """:meth:`Reviews.states` on a connection the caller holds: an events page reads its total, its rows and their
    states with one connection from the pool instead of three."""
    acks: dict[str, dict[str, Any]] = {}
    verdicts: dict[str, dict[str, Any]] = {}
    if event_ids:
        for row in connection.execute(_STATE_QUERY, {"event_ids": event_ids}):  # the latest overwrites the rest
            (acks if row.action == "ack" else verdicts)[row.event_id] = _entry(row)
    return {e: ReviewState(acks.get(e), verdicts.get(e)) if e in acks or e in verdicts else _UNREVIEWED
            for e in event_ids}


_UNREVIEWED = ReviewState()  # shared (it is frozen): most events of a page have no review


def _entry(row: ReviewRow | Row[Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"user": row.username, "time": row.time}
    if row.action == "verdict":
        entry.update(verdict=row.verdict, note=row.note)
    return entry


def reviewed_clause(reviewed: bool) -> Any:
    """A WHERE clause on EventRow: the event has (or has no) verdict."""
    has = select(ReviewRow.id).where(ReviewRow.event_id == EventRow.id, ReviewRow.action == "verdict").exists()
    return has if reviewed else ~has


# ------------------------------------------------------------------------------ operating point from verdicts

MIN_SAMPLES = 30
_MAX_SAMPLES = 1 << 40


@dataclass(frozen=True)
class OperatingPoint:
    """The lowest score threshold whose precision's Wilson 95% lower bound reaches ``target``, or why there is none.

    The lower bound, not the observed precision, must reach the target: 19 correct of 19 is 100% observed but
    only ≥ 83% with 95% confidence, and a threshold set on luck does not hold in the field. At least
    ``min_samples`` samples must lie at or above the threshold.
    """

    target: float
    min_samples: int
    samples: int  # scored samples in all
    threshold: float | None = None  # the score to configure; None when the target is not reached
    kept: int = 0  # samples at or above the threshold (or, not reached, at the most promising score)
    true_positives: int = 0
    lower_bound: float = 0.0
    at_score: float | None = None  # the score ``kept`` and ``true_positives`` refer to
    needed: int | None = None  # more samples needed, if the precision so far holds; None: more will not help

    @property
    def reached(self) -> bool:
        return self.threshold is not None

    @property
    def precision(self) -> float | None:
        return self.true_positives / self.kept if self.kept else None

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "min_samples": self.min_samples, "samples": self.samples,
                "threshold": self.threshold, "kept": self.kept, "true_positives": self.true_positives,
                "precision": self.precision, "lower_bound": self.lower_bound, "at_score": self.at_score,
                "needed": self.needed}

    def explain(self, what: str = "verdicts") -> str:
        """One line for people: what was found, or what is missing and how much more is needed."""
        if self.reached:
            return (f"min_score {self.threshold:g}: {self.kept} {what} at or above, {self.true_positives} true "
                    f"positive, precision {self.precision:.3f}, Wilson 95% lower bound {self.lower_bound:.3f} ≥ "
                    f"{self.target:g}")
        so_far = (f"the best so far is precision {self.precision:.3f} (lower bound {self.lower_bound:.3f}) over "
                  f"{self.kept} {what} scoring ≥ {self.at_score:.3f}" if self.kept and self.at_score is not None
                  else f"no {what} yet")
        if self.needed is not None:
            return (f"not enough {what} for precision ≥ {self.target:g} with 95% confidence ({self.samples} "
                    f"{what}, at least {self.min_samples} needed at or above a threshold): about {self.needed} more "
                    f"needed if the precision so far holds; {so_far}")
        return (f"no threshold reaches precision {self.target:g}: {so_far}, and more {what} at that precision "
                "will not change it; look at the false positives (masks, zones, the label's filters) or choose a "
                "lower target")


def operating_point(scores: Sequence[float], hits: Sequence[bool], target: float,
                    min_samples: int = MIN_SAMPLES) -> OperatingPoint:
    """The lowest threshold ``t`` such that samples scoring ≥ ``t`` have a precision whose lower bound reaches target.

    Thresholds cut between distinct scores only (tied scores stay together). The proposed value is the
    shortest decimal in (next lower score, cut score], so configuring it keeps exactly the samples counted.
    """
    if len(scores) != len(hits):
        raise ValueError(f"{len(scores)} scores but {len(hits)} outcomes: one outcome per score")
    pairs = sorted(zip((float(s) for s in scores), (bool(h) for h in hits), strict=True), key=lambda p: -p[0])
    cuts: list[tuple[int, int, float]] = []  # (samples at or above, true positives among them, score)
    tp = 0
    for i, (score, hit) in enumerate(pairs):
        tp += hit
        if i + 1 == len(pairs) or pairs[i + 1][0] != score:
            cuts.append((i + 1, tp, score))
    base = OperatingPoint(target=target, min_samples=min_samples, samples=len(pairs))
    reached = [c for c in cuts if c[0] >= min_samples and wilson(c[1], c[0])[0] >= target - 1e-12]
    if reached:
        n, tp, score = reached[-1]
        below = pairs[n][0] if n < len(pairs) else None
        return replace(base, threshold=_config_value(score, below), kept=n, true_positives=tp,
                       lower_bound=wilson(tp, n)[0], at_score=score)
    if not cuts:
        return replace(base, needed=max(min_samples, _samples_for(1.0, target)) if target < 1 else None)
    n, tp, score = max(cuts, key=lambda c: (wilson(c[1], c[0])[0], c[0]))
    more = [max(min_samples, _samples_for(t / k, target)) - k for k, t, _ in cuts if t / k > target]
    return replace(base, kept=n, true_positives=tp, lower_bound=wilson(tp, n)[0], at_score=score,
                   needed=max(1, min(more)) if more else None)


def _samples_for(precision: float, target: float) -> int:
    """Fewest samples at ``precision`` whose Wilson lower bound reaches ``target`` (precision > target)."""
    def low(n: int) -> float:
        return wilson(precision * n, n)[0]  # type: ignore[arg-type]  # a float count is fine for the formula

    high = 1
    while low(high) < target - 1e-12 and high < _MAX_SAMPLES:
        high *= 2
    lo = high // 2 + 1 if high > 1 else 1
    while lo < high:
        mid = (lo + high) // 2
        lo, high = (lo, mid) if low(mid) >= target - 1e-12 else (mid + 1, high)
    return high


def _config_value(score: float, below: float | None) -> float:
    """The shortest decimal v with below < v ≤ score: what a person types into the config."""
    for digits in (2, 3, 4):
        value = round(score, digits)
        if value > score:
            value = round(value - 10 ** -digits, digits)
        if below is None or value > below:
            return value
    return score


# --------------------------------------------------------------------------------- who gave the verdicts


@dataclass(frozen=True)
class Domination:
    """One account gave more than ``max_share`` of a verdict set: its labels are one person's judgement."""

    account: str
    verdicts: int
    total: int
    max_share: float

    @property
    def share(self) -> float:
        return self.verdicts / self.total

    def to_json(self) -> dict[str, Any]:
        return {"account": self.account, "verdicts": self.verdicts, "total": self.total,
                "share": round(self.share, 4), "max_share": self.max_share}

    def warning(self, scope: str = "") -> str:
        where = f" of {scope}" if scope else ""
        return (f"the verdicts{where} are dominated by one account: {self.account!r} gave {self.verdicts} of "
                f"{self.total} ({self.share:.0%}, more than {self.max_share:.0%}); one person's judgement, or one "
                "compromised account, would set these labels: have other operators review events too")


def dominating_account(verdicts: Iterable[ReviewRow], max_share: float = 0.5,
                       min_verdicts: int = 10) -> Domination | None:
    """The account that gave more than ``max_share`` of ``verdicts`` (and at least ``min_verdicts``), if any.

    Accounts are told apart by user id where there is one, so a renamed account is still one account.
    """
    counts: Counter[tuple[str, Any]] = Counter()
    names: dict[tuple[str, Any], str] = {}
    for row in verdicts:
        key = ("id", row.user_id) if row.user_id is not None else ("name", row.username)
        counts[key] += 1
        names[key] = row.username
    total = sum(counts.values())
    if not total:
        return None
    key, top = counts.most_common(1)[0]
    if top >= min_verdicts and top / total > max_share:
        return Domination(names[key], top, total, max_share)
    return None


@dataclass(frozen=True)
class Calibration:
    """The operating point of one camera and label, from the verdicts on its current model's events."""

    camera: str
    label: str
    model: str  # name@sha256 prefix of the model whose scores were used
    point: OperatingPoint
    dominated: Domination | None
    left_out: int  # verdicts on other models' events or on events only the second-opinion model saw


def calibrate(labelled: Iterable[tuple[EventRow, ReviewRow]], *, target: float, min_samples: int = MIN_SAMPLES,
              max_share: float = 0.5, min_verdicts: int = 10, camera: str | None = None) -> list[Calibration]:
    """Per camera and label, the lowest event score threshold reaching ``target`` precision by operators' verdicts.

    Scores of different models are not comparable, so only events of the model of the group's latest event
    count; events seen only by the second-opinion model carry that model's score and are left out too.
    """
    groups: dict[tuple[str, str], list[tuple[EventRow, ReviewRow]]] = {}
    for event, review in labelled:
        if camera is None or event.camera == camera:
            groups.setdefault((event.camera, event.label), []).append((event, review))
    out = []
    for (cam, label), pairs in sorted(groups.items()):
        primary = [p for p in pairs if p[0].seen_by != "secondary"]
        latest = max(primary, key=lambda p: p[0].start)[0] if primary else pairs[-1][0]
        used = [(e, r) for e, r in primary
                if (e.model_name, e.model_sha256) == (latest.model_name, latest.model_sha256)]
        point = operating_point([e.best_score for e, _ in used],
                                [r.verdict == Verdict.true_positive for _, r in used], target, min_samples)
        out.append(Calibration(cam, label, f"{latest.model_name}@{latest.model_sha256[:12]}", point,
                               dominating_account((r for _, r in used), max_share, min_verdicts),
                               len(pairs) - len(used)))
    return out
