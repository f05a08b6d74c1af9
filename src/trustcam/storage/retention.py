"""Retention, legal hold and disk-space eviction for the evidence vault.

Footage is deleted only through ``Vault.shred`` (the data key is destroyed, the file removed and a
``DeletionRow`` written), so every deletion is crypto-shredding and is on record. Held footage is never
expired or evicted: a hold is checked twice, on the segment's own ``held`` flag and against every held event
(footage recorded after a hold was placed is protected too). Exports are separate files with their own
retention and are never touched here.
"""

from __future__ import annotations

import bisect
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from sqlalchemy import ColumnElement, Engine, String, and_, cast, exists, func, select, update
from sqlalchemy.orm import Session

from trustcam.config.schema import RetentionConfig, Settings
from trustcam.storage.schema import EventRow, SegmentRow

if TYPE_CHECKING:
    from trustcam.storage.vault import Vault

log = logging.getLogger(__name__)

HOLD_MARGIN_S = 5.0  # footage this close to a held event is held with it (pre/post capture, cut points)
MB = 1024 * 1024
DISK_FULL = "disk full: only held evidence left"
LOW_DISK = "low disk space"

# Every camera thread's StorageGuard and the worker may find the disk short at once: one evicts at a time, so
# the same shortfall is not freed twice over. (Retention needs no lock: shredding twice is a no-op.)
_EVICTION_LOCK = threading.Lock()


@dataclass(frozen=True)
class StorageAlert:
    """Published on the bus when footage is evicted for space or the disk holds nothing but held evidence."""

    camera: str | None
    message: str
    time: float


# --- legal hold ---------------------------------------------------------------------------------------------

def _overlapping(camera: str, start: float, end: float, margin: float = HOLD_MARGIN_S) -> ColumnElement[bool]:
    # inclusive, like Vault.is_held: a segment the vault would refuse to shred is never a candidate
    return and_(SegmentRow.camera == camera, SegmentRow.start <= end + margin, SegmentRow.end >= start - margin)


def hold_event(engine: Engine, event_id: str, held: bool = True, margin: float = HOLD_MARGIN_S) -> list[str]:
    """Put an event (and the footage around it, ± 5 s) on legal hold, or release it.

    Releasing keeps a segment held while another held event of the same camera still overlaps it (a hold
    set on a segment directly, not through an event, is released too: the schema cannot tell them apart).
    Returns the ids of the segments whose hold changed. Raises ``KeyError`` for an unknown event.
    """
    with Session(engine) as session, session.begin():
        event = session.get(EventRow, event_id)
        if event is None:
            raise KeyError(f"no event {event_id!r}")
        event.held = int(held)
        segments = list(session.scalars(select(SegmentRow).where(
            _overlapping(event.camera, event.start, event.end, margin), SegmentRow.deleted_at.is_(None))))
        if held:
            changed = [s for s in segments if not s.held]
        else:
            others = list(session.scalars(select(EventRow).where(
                EventRow.camera == event.camera, EventRow.held != 0, EventRow.id != event_id)))
            changed = [s for s in segments if s.held and not any(_touches(s, o, margin) for o in others)]
        for segment in changed:
            segment.held = int(held)
        return [s.id for s in changed]


def _touches(segment: SegmentRow, event: EventRow, margin: float) -> bool:
    return segment.start <= event.end + margin and segment.end >= event.start - margin


def _sync_holds(session: Session, margin: float) -> None:
    """Mark footage overlapping a held event as held, including footage stored after the hold was placed."""
    for event in session.scalars(select(EventRow).where(EventRow.held != 0)):
        session.execute(update(SegmentRow).where(
            _overlapping(event.camera, event.start, event.end, margin), SegmentRow.held == 0).values(held=1))


# --- policies -----------------------------------------------------------------------------------------------

def retention_for(vault: Vault, settings: Settings | None, camera: str) -> RetentionConfig:
    """The camera's own retention when its config overrides it, else the vault's."""
    cam = settings.cameras.get(camera) if settings is not None else None
    if cam is not None and cam.record.retention is not None:
        return cam.record.retention
    return vault.config.retention


def _limit_s(policy: RetentionConfig, labels: Sequence[str]) -> float:
    return policy.days_for(list(labels)) * 86400.0 if labels else policy.footage_without_events_h * 3600.0


def _rule(policy: RetentionConfig, labels: Sequence[str]) -> str:
    if not labels:
        return f"retention: footage without events older than {policy.footage_without_events_h:g} h"
    return f"retention: {', '.join(sorted(labels))} footage older than {policy.days_for(list(labels)):g} days"


@dataclass
class _Candidate:
    id: str
    camera: str
    start: float
    end: float
    has_motion: bool
    labels: tuple[str, ...]


class _EventIndex:
    """Labels of the events overlapping a time span, per camera: a segment's labels may be stored before the
    event it belongs to has finished, and retention must never be shortened by that."""

    def __init__(self, session: Session, cameras: Iterable[str]) -> None:
        self._by_camera: dict[str, tuple[list[float], list[tuple[float, float, str]], float]] = {}
        for camera in set(cameras):
            rows = session.execute(select(EventRow.start, EventRow.end, EventRow.label)
                                   .where(EventRow.camera == camera).order_by(EventRow.start)).all()
            spans = [(float(a), float(b), str(label)) for a, b, label in rows]
            longest = max((b - a for a, b, _ in spans), default=0.0)
            self._by_camera[camera] = ([a for a, _, _ in spans], spans, longest)

    def labels(self, camera: str, start: float, end: float) -> set[str]:
        starts, spans, longest = self._by_camera.get(camera, ([], [], 0.0))
        lo, hi = bisect.bisect_left(starts, start - longest), bisect.bisect_left(starts, end)
        return {label for a, b, label in spans[lo:hi] if a < end and b > start}


def _longest_event(session: Session) -> float:
    return float(session.scalar(select(func.max(EventRow.end - EventRow.start))) or 0.0)


def _no_event(longest: float) -> ColumnElement[bool]:
    """SQL: the segment has no stored label and overlaps no event of its camera (footage without events).

    The event probe is bounded by the longest event so it walks the ``events.start`` index; the camera is
    compared as ``camera || ''`` so SQLite does not pick the (far less selective) camera index instead.
    """
    return and_(cast(SegmentRow.labels, String).in_(["[]", "null"]), ~exists().where(
        EventRow.start < SegmentRow.end, EventRow.start >= SegmentRow.start - longest,
        EventRow.end > SegmentRow.start, EventRow.camera.concat("") == SegmentRow.camera))


def _live_unheld() -> ColumnElement[bool]:
    return and_(SegmentRow.deleted_at.is_(None), SegmentRow.held == 0)


def _candidates(vault: Vault, session: Session, older_than: float | None = None,
                event_footage_only: bool = False) -> list[_Candidate]:
    """Live, unheld segments with their effective labels (stored labels ∪ overlapping events)."""
    _sync_holds(session, vault.hold_margin_s)
    query = select(SegmentRow.id, SegmentRow.camera, SegmentRow.start, SegmentRow.end, SegmentRow.has_motion,
                   SegmentRow.labels).where(_live_unheld())
    if older_than is not None:
        query = query.where(SegmentRow.end < older_than)
    if event_footage_only:
        query = query.where(~_no_event(_longest_event(session)))
    rows = session.execute(query).all()
    events = _EventIndex(session, (r.camera for r in rows))
    return [_Candidate(r.id, r.camera, r.start, r.end, bool(r.has_motion),
                       tuple(sorted(set(r.labels or ()) | events.labels(r.camera, r.start, r.end))))
            for r in rows]


def _shred(vault: Vault, segment_id: str, reason: str) -> bool:
    """Shred one segment; a failure (held meanwhile, I/O) is logged and skipped, never fatal."""
    try:
        vault.shred(segment_id, reason)
    except Exception as exc:
        log.warning("could not shred segment %s (%s): %s", segment_id, reason, exc)
        return False
    return True


def apply_retention(vault: Vault, settings: Settings | None, now: float | None = None,
                    stop: threading.Event | None = None) -> list[str]:
    """Shred every unheld segment older than its policy allows; returns the shredded ids.

    Age is counted from the segment's end. Footage overlapping no event follows ``footage_without_events_h``;
    footage with events keeps the longest ``event_days`` of its labels. A camera's ``record.retention``
    overrides the vault's policy for that camera. ``stop`` ends a long pass early (the rest waits for the
    next one).
    """
    now = time.time() if now is None else now
    policies = [vault.config.retention]
    if settings is not None:
        policies += [c.record.retention for c in settings.cameras.values() if c.record.retention is not None]
    shortest = min(min(p.footage_without_events_h * 3600.0, min([*p.event_days.values(), p.days_for([])]) * 86400.0)
                   for p in policies)
    with Session(vault.engine) as session, session.begin():
        candidates = _candidates(vault, session, older_than=now - shortest)
    shredded = []
    # no lock held across the pass: shredding twice is a no-op in the vault, and a long first pass over a
    # backlog must not make camera threads wait in StorageGuard
    for c in sorted(candidates, key=lambda c: c.start):
        if stop is not None and stop.is_set():
            break
        policy = retention_for(vault, settings, c.camera)
        if now - c.end > _limit_s(policy, c.labels) and _shred(vault, c.id, _rule(policy, c.labels)):
            shredded.append(c.id)
    if shredded:
        log.info("retention shredded %d segment(s)", len(shredded))
    return shredded


# --- disk space ---------------------------------------------------------------------------------------------

def _existing(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _paths(vault: Vault) -> list[Path]:
    return [_existing(p) for p in (vault.root, vault.mirror) if p is not None]


def free_bytes(vault: Vault) -> int:
    """Free space at the vault root, or at its mirror when that has less (a segment is written to both)."""
    return min(shutil.disk_usage(p).free for p in _paths(vault))


def eviction_order(vault: Vault, settings: Settings | None, candidates: list[_Candidate]) -> list[_Candidate]:
    """Least valuable first: footage without events (still scenes before motion), then event footage by the
    retention its labels earn, then the oldest."""
    def key(c: _Candidate) -> tuple[bool, float, bool, float]:
        if not c.labels:
            return (False, 0.0, c.has_motion, c.start)
        return (True, retention_for(vault, settings, c.camera).days_for(list(c.labels)), False, c.start)

    return sorted(candidates, key=key)


def _eviction_reason(policy: RetentionConfig, labels: Sequence[str]) -> str:
    if not labels:
        return "evicted for disk space: footage without events"
    return f"evicted for disk space: {', '.join(labels)} footage ({policy.days_for(list(labels)):g} days policy)"


def _quiet_batch(session: Session, skip: set[str], size: int = 64) -> list[str]:
    """The next footage without events to evict, in eviction order, straight from SQL: the common case on a
    full disk is a few of these per write, so it must not load every segment."""
    query = (select(SegmentRow.id).where(_live_unheld(), _no_event(_longest_event(session)))
             .order_by(SegmentRow.has_motion, SegmentRow.start).limit(size + len(skip)))
    return [sid for sid in session.scalars(query) if sid not in skip][:size]


def evict_for_space(vault: Vault, settings: Settings | None, needed_bytes: int = 0, now: float | None = None,
                    alert: Callable[[StorageAlert], None] | None = None) -> list[str]:
    """Keep ``min_free_mb`` (+ ``needed_bytes``) free at the vault root by shredding the least valuable unheld
    footage first (:func:`eviction_order`); returns the shredded ids.

    Held footage is never evicted: when only held footage is left and space is still short, the alert
    ``disk full: only held evidence left`` is sent (and logged) instead. Every eviction is alerted too, so an
    operator learns the disk is too small for the retention policy before footage they wanted is gone.
    """
    now = time.time() if now is None else now
    threshold = int(vault.config.min_free_mb * MB) + max(0, int(needed_bytes))

    def send(message: str) -> None:
        log.warning("%s", message)
        if alert is not None:
            alert(StorageAlert(camera=None, message=message, time=now))

    evicted: list[str] = []
    with _EVICTION_LOCK:  # one evictor at a time, or two cameras would both free the same shortfall
        free_before = free = free_bytes(vault)
        if free >= threshold:
            return []
        with Session(vault.engine) as session, session.begin():
            _sync_holds(session, vault.hold_margin_s)
        skip: set[str] = set()
        while free < threshold:
            with Session(vault.engine) as session:
                batch = _quiet_batch(session, skip)
            if not batch:
                break
            for sid in batch:
                if free >= threshold:
                    break
                if _shred(vault, sid, _eviction_reason(vault.config.retention, ())):
                    evicted.append(sid)
                else:
                    skip.add(sid)
                free = free_bytes(vault)
        if free < threshold:
            with Session(vault.engine) as session, session.begin():
                queue = eviction_order(vault, settings, _candidates(vault, session, event_footage_only=True))
            for c in queue:
                if free >= threshold:
                    break
                if _shred(vault, c.id, _eviction_reason(retention_for(vault, settings, c.camera), c.labels)):
                    evicted.append(c.id)
                free = free_bytes(vault)
    if evicted:
        send(f"{LOW_DISK} at {vault.root}: evicted {len(evicted)} segment(s), "
             f"{(free - free_before) / MB:.1f} MB freed, {free / MB:.1f} MB free "
             f"(min_free_mb {vault.config.min_free_mb:g})")
    if free < threshold:
        send(f"{DISK_FULL} at {vault.root} ({free / MB:.1f} MB free, {threshold / MB:.1f} MB wanted); "
             "nothing was deleted that is on legal hold — release holds or add storage")
    return evicted


class StorageGuard:
    """Called by the recorder before each write: makes room by policy, never refuses a write.

    Recording is never stopped for a full disk; if a write still fails the recorder retries with the next
    segment. A write that finds enough room costs one ``statvfs``. When room runs short, eviction frees
    ``headroom_bytes`` more than needed (default: 2% of the disk, at most 1 GiB), so that on a full disk it
    runs every few dozen writes rather than before each one. Repeated alerts of the same kind (every write
    while only held footage is left) are sent at most once per ``alert_every_s``.
    """

    def __init__(self, vault: Vault, settings: Settings | None = None,
                 publish: Callable[[StorageAlert], None] | None = None, alert_every_s: float = 300.0,
                 headroom_bytes: int | None = None) -> None:
        self.vault = vault
        self.settings = settings
        self.publish = publish
        self.alert_every_s = alert_every_s
        self.headroom_bytes = headroom_bytes
        self.alerts: list[StorageAlert] = []  # the last 100 alerts sent, newest last
        self._last_sent: dict[str, float] = {}
        self._lock = threading.Lock()

    def _headroom(self) -> int:
        if self.headroom_bytes is not None:
            return self.headroom_bytes
        return min(min(shutil.disk_usage(p).total for p in _paths(self.vault)) // 50, 1024 * MB)

    def ensure_space(self, size: int = 0, camera: str | None = None) -> bool:
        """Make room for ``size`` more bytes above ``min_free_mb``; True when there is room. Never raises."""
        try:
            floor = int(self.vault.config.min_free_mb * MB)
            if free_bytes(self.vault) >= floor + size:
                return True
            evict_for_space(self.vault, self.settings, needed_bytes=size + self._headroom(), alert=self._send)
            return free_bytes(self.vault) >= size
        except Exception as exc:  # a broken check must not stop a camera
            log.exception("storage guard failed")
            self._send(StorageAlert(camera, f"storage check failed: {exc}", time.time()))
            return True

    def _send(self, alert: StorageAlert) -> None:
        # the same condition with new figures is one alert per period
        kind = next((k for k in (DISK_FULL, LOW_DISK) if alert.message.startswith(k)), alert.message)
        with self._lock:
            last = self._last_sent.get(kind)
            if last is not None and alert.time - last < self.alert_every_s:
                return
            self._last_sent[kind] = alert.time
            self.alerts = [*self.alerts[-99:], alert]
        if self.publish is not None:
            self.publish(alert)


class RetentionWorker:
    """Background thread for ``trustcam run``: applies retention and checks free space every ``interval_s``.

    ``stop()`` returns within one pass (it never waits out the interval); a failing pass is logged and the
    next one runs as usual.
    """

    def __init__(self, vault: Vault, settings: Settings | None = None, interval_s: float = 300.0,
                 publish: Callable[[StorageAlert], None] | None = None, guard: StorageGuard | None = None) -> None:
        self.vault = vault
        self.settings = settings
        self.interval_s = interval_s
        self.guard = guard or StorageGuard(vault, settings, publish)
        self.passes = 0
        self.shredded: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> list[str]:
        shredded = apply_retention(self.vault, self.settings, stop=self._stop)
        self.guard.ensure_space(0)
        self.shredded += shredded
        self.passes += 1
        return shredded

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("retention pass failed")
            self._stop.wait(self.interval_s)

    def start(self) -> RetentionWorker:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> RetentionWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GuardedVault:
    """The recorders' sink: frees space by policy before each write, so a full disk never stops recording."""

    def __init__(self, vault: Vault, guard: StorageGuard) -> None:
        self.vault = vault
        self.guard = guard

    def store_segment(self, camera: str, data: bytes | BinaryIO, start: float, end: float, *,
                      has_motion: bool = False, labels: Sequence[str] = ()) -> SegmentRow:
        self.guard.ensure_space(len(data) if isinstance(data, bytes | bytearray) else 0, camera)
        return self.vault.store_segment(camera, data, start, end, has_motion=has_motion, labels=labels)
