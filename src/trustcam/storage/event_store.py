"""Persist finished events; subscribes to the bus so the pipeline never waits on storage code."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from trustcam.bus import Bus
from trustcam.events.model import Event, EventEnded
from trustcam.storage.faces import ERASED, UNKNOWN
from trustcam.storage.schema import EventRow, FaceIdentityRow
from trustcam.storage.write_buffer import DEFAULT_CAPACITY, WriteBuffer, lost_alert

if TYPE_CHECKING:
    from trustcam.storage.leases import Fences

NOT_IDENTITIES = {None, UNKNOWN, ERASED}


class EventStore:
    def __init__(self, engine: Engine, fences: Fences | None = None, buffer: int = DEFAULT_CAPACITY) -> None:
        """``buffer``: events kept in memory while the database is unreachable (``database_buffer``)."""
        self.engine = engine
        self.fences = fences  # camera leases (several machines): a stale worker's event is refused (LeaseLost)
        self._bus: Bus | None = None
        self.writes = WriteBuffer("event", buffer, on_lost=self._report_lost)
        # the vault's ``seal_event`` when footage is recorded: runs after the event's row is stored, through the same
        # buffer, so an event stored late (the database was away when it ended) is sealed once stored, not never
        self.seal: Callable[[str], object] | None = None

    def attach(self, bus: Bus) -> None:
        """Store every ended event; while the database is away they wait in :attr:`writes` (the camera thread that
        publishes ``EventEnded`` never waits on a database that is down) and are stored, in order, once it is back."""
        self._bus = bus
        bus.subscribe(EventEnded, lambda message: self.save_soon(message.event))

    def save_soon(self, event: Event) -> None:
        """:meth:`save` now, or once the database is back (see :class:`WriteBuffer`); then :attr:`seal` it, queued
        behind its row when that had to wait (the buffer keeps order), so the seal always hashes the stored row."""
        what = f"event {event.id} ({event.camera}, {event.label})"
        self.writes.submit(lambda: self.save(event), what)
        seal = self.seal
        if seal is not None:
            self.writes.submit(lambda: seal(event.id), f"seal of {what}")

    def close(self, timeout: float = 10.0) -> None:
        """Give events still waiting for the database ``timeout`` s to be stored (at shutdown, after the cameras)."""
        self.writes.close(timeout)

    def _report_lost(self, lost: int) -> None:
        if self._bus is not None:
            self._bus.publish(lost_alert("event", lost, self.writes.capacity))

    def save(self, event: Event) -> None:
        data = event.to_json()
        row = EventRow(
            id=event.id, camera=event.camera, label=event.label, track_id=event.track_id, start=event.start,
            end=event.end, best_score=event.best_score, box=data["box"], zones=event.zones, rules=data["rules"],
            threat=event.threat.value, snapshot=event.snapshot, model_name=event.model_name,
            model_sha256=event.model_sha256, seen_by=event.seen_by, sub_label=event.sub_label,
            face_distance=event.face_distance, face_margin=event.face_margin,
        )
        with Session(self.engine) as session, session.begin():
            if self.fences is not None:  # first: the lease row's lock is held until this commits
                self.fences.check(session, event.camera)
            if row.sub_label not in NOT_IDENTITIES and session.scalar(
                    select(FaceIdentityRow.id).where(FaceIdentityRow.name == row.sub_label)) is None:
                row.sub_label, row.face_distance, row.face_margin = ERASED, None, None  # erased during the event
            session.merge(row)

    def recent(self, limit: int = 100, camera: str | None = None) -> list[EventRow]:
        query = select(EventRow).order_by(EventRow.start.desc()).limit(limit)
        if camera is not None:
            query = query.where(EventRow.camera == camera)
        with Session(self.engine) as session:
            return list(session.scalars(query))
