"""Camera leases with fencing tokens: at most one live worker records and raises events for a camera.

A worker *acquires* the camera's lease before it runs and *renews* it well within its TTL; each acquisition
increments the camera's **fencing token** (monotonic: the row is never deleted, so a token is never reused).
Every write a camera makes (event rows, vault segments and checkpoints) carries the writer's token and is checked
in the writer's own transaction (:func:`check_fence`): a worker on a partitioned or paused node, whose lease another
node has since taken, gets :class:`LeaseLost` and nothing is written. The guarantee rests on the database, not on
the scheduler (Ray, systemd, a human) that places the workers, and not on clocks: a clock that is off only makes a
takeover come early or late; the token check still refuses the old holder's writes.

How each operation stays correct with several writers, on SQLite and PostgreSQL alike: every one is a single
conditional ``UPDATE … WHERE`` on the camera's row (after an ``INSERT … ON CONFLICT DO NOTHING`` that makes sure
the row exists), never a read followed by a write. PostgreSQL takes the row lock for the UPDATE and, under READ
COMMITTED, re-evaluates the WHERE on the newest row version once a concurrent updater commits, so of two racing
acquirers the second sees the first one's lease and matches nothing; SQLite admits one writer at a time. No
dialect-specific locking (``SELECT … FOR UPDATE``, ``BEGIN IMMEDIATE``) is needed, and there is no window between
a check and the write it guards. The fence check is an UPDATE for the same reason: it takes the lock an acquirer
needs (the row lock on PostgreSQL, the write lock on SQLite, where pysqlite would run a plain SELECT outside the
transaction), so a takeover waits for an in-flight fenced write to commit, and a write after a takeover sees the
new token.

Single-box mode configures no lease: writers get no :class:`Fences`, check nothing and need no lease row.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, Table, and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from trustcam.errors import UserError
from trustcam.storage.schema import CameraLeaseRow

log = logging.getLogger(__name__)

LEASES: Table = CameraLeaseRow.__table__  # type: ignore[assignment]
DEFAULT_TTL_S = 15.0  # a dead node's cameras move after at most this long (plus the scheduler's own delay)
DEFAULT_GRACE_S = 2.0  # clock skew between nodes tolerated by the expiry part of the fence check

Clock = Callable[[], float]


def holder_id() -> str:
    """A holder name unique to this process incarnation (host, pid, random): a restarted worker is a new holder."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseLost(UserError):
    """This worker no longer holds the camera's lease (another holder took it, or it expired or was released):
    its writes are refused and it must stop the camera. The message names the camera, the tokens and the fix."""


@dataclass(frozen=True)
class Lease:
    """One holder's claim on a camera: ``token`` fences its writes until ``expires_at`` (epoch seconds)."""

    camera: str
    holder: str
    token: int
    expires_at: float


def _ensure_row(session: Session, camera: str) -> None:
    """The camera's row, free (token 0) when it is new; a concurrent inserter's row is kept as it is."""
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    session.execute(module.insert(LEASES).values(camera=camera, holder=None, token=0, expires_at=0.0)
                    .on_conflict_do_nothing(index_elements=["camera"]))


def _describe(session: Session, camera: str, token: int, now: float) -> str:
    """Why ``token`` is not (or no longer) valid, for the LeaseLost message."""
    row = session.execute(select(LEASES.c.holder, LEASES.c.token, LEASES.c.expires_at)
                          .where(LEASES.c.camera == camera)).first()
    if row is None:
        return "the camera has no lease row (it was never acquired)"
    if row.token != token:
        return f"token {token} is stale: token {row.token} was since given to {row.holder or 'nobody (released)'}"
    if row.holder is None:
        return f"token {token} was released"
    return f"token {token} expired {now - row.expires_at:.1f} s ago (not renewed in time)"


def check_fence(session: Session, camera: str, token: int, now: float, grace_s: float = DEFAULT_GRACE_S) -> None:
    """Raise :class:`LeaseLost` unless ``token`` is the camera's current token and its lease has not expired more
    than ``grace_s`` ago. Call it first in the writing transaction: the row lock it takes is held until commit."""
    matched = session.execute(update(LEASES).where(
        LEASES.c.camera == camera, LEASES.c.token == token, LEASES.c.holder.is_not(None),
        LEASES.c.expires_at >= now - grace_s).values(token=LEASES.c.token)).rowcount
    if matched != 1:
        raise LeaseLost(f"camera {camera}: write refused, this worker no longer holds the camera's lease "
                        f"({_describe(session, camera, token, now)}); another worker records it now: stop this "
                        "one (the scheduler restarts it as a standby)")


class Leases:
    """Acquire, renew and release camera leases in the database. ``clock`` (epoch seconds) is injectable so tests
    can pause a holder past its TTL; every node's clock should be NTP-synchronised (see the module docstring)."""

    def __init__(self, engine: Engine, clock: Clock = time.time) -> None:
        self.engine = engine
        self.clock = clock

    def acquire(self, camera: str, holder: str, ttl_s: float = DEFAULT_TTL_S) -> Lease | None:
        """The lease with a new, higher token when the camera is free, expired, released, or already ``holder``'s
        (a restarted holder fences its previous incarnation at once); None while someone else holds it."""
        now = self.clock()
        with Session(self.engine) as session, session.begin():
            _ensure_row(session, camera)
            row = session.execute(update(LEASES).where(
                LEASES.c.camera == camera,
                or_(LEASES.c.holder.is_(None), LEASES.c.expires_at < now, LEASES.c.holder == holder))
                .values(holder=holder, token=LEASES.c.token + 1, expires_at=now + ttl_s)
                .returning(LEASES.c.token, LEASES.c.expires_at)).first()
        if row is None:
            return None
        return Lease(camera, holder, int(row.token), float(row.expires_at))

    def renew(self, camera: str, holder: str, token: int, ttl_s: float = DEFAULT_TTL_S) -> Lease:
        """Extend the lease by ``ttl_s`` from now, only while ``holder`` still holds it with ``token`` (also after
        it expired, as long as nobody took it since: the token is unchanged then); else :class:`LeaseLost`."""
        now = self.clock()
        with Session(self.engine) as session, session.begin():
            row = session.execute(update(LEASES).where(
                and_(LEASES.c.camera == camera, LEASES.c.holder == holder, LEASES.c.token == token))
                .values(expires_at=now + ttl_s).returning(LEASES.c.expires_at)).first()
            if row is None:
                raise LeaseLost(f"camera {camera}: lease not renewed for {holder} "
                                f"({_describe(session, camera, token, now)}); stop this worker")
        return Lease(camera, holder, token, float(row.expires_at))

    def release(self, lease: Lease) -> bool:
        """Free the camera for the next acquirer at once (a clean stop). The token stays: the next one is higher.
        False when the lease was no longer held (nothing to release)."""
        with Session(self.engine) as session, session.begin():
            return session.execute(update(LEASES).where(
                LEASES.c.camera == lease.camera, LEASES.c.holder == lease.holder, LEASES.c.token == lease.token)
                .values(holder=None, expires_at=0.0)).rowcount == 1

    def current(self, camera: str) -> Lease | None:
        """The camera's live lease (None when free, released or expired): for status pages, not for fencing."""
        with Session(self.engine) as session:
            row = session.execute(select(LEASES).where(LEASES.c.camera == camera)).first()
        if row is None or row.holder is None or row.expires_at < self.clock():
            return None
        return Lease(camera, row.holder, int(row.token), float(row.expires_at))


class Fences:
    """The fencing tokens this process holds, per camera, which its writers (:class:`EventStore`, :class:`Vault`)
    check in every write transaction. A camera without a token here is refused: with fences configured, only a
    lease holder writes."""

    def __init__(self, clock: Clock = time.time, grace_s: float = DEFAULT_GRACE_S) -> None:
        self.clock = clock
        self.grace_s = grace_s
        self._tokens: dict[str, int] = {}
        self._lock = threading.Lock()

    def hold(self, lease: Lease) -> None:
        with self._lock:
            self._tokens[lease.camera] = lease.token

    def drop(self, camera: str) -> None:
        with self._lock:
            self._tokens.pop(camera, None)

    def token(self, camera: str) -> int | None:
        with self._lock:
            return self._tokens.get(camera)

    def check(self, session: Session, camera: str) -> None:
        """:func:`check_fence` with this process's token for ``camera``; :class:`LeaseLost` when it has none."""
        token = self.token(camera)
        if token is None:
            raise LeaseLost(f"camera {camera}: write refused, this worker holds no lease for the camera (never "
                            "acquired, or lost); only the lease holder writes a camera's events and footage")
        check_fence(session, camera, token, self.clock(), self.grace_s)


class LeaseKeeper:
    """One camera's lease for its worker: :meth:`acquire` waits until the lease is free, then a thread renews it
    every ``ttl_s / 3``. ``on_lost`` is called once when the lease is lost: taken by another holder, or not
    renewable before it expires (the database unreachable: a partitioned node fences itself off too)."""

    def __init__(self, leases: Leases, fences: Fences, camera: str, holder: str, ttl_s: float = DEFAULT_TTL_S,
                 retry_s: float = 1.0) -> None:
        self.leases, self.fences = leases, fences
        self.camera, self.holder = camera, holder
        self.ttl_s, self.retry_s = ttl_s, retry_s
        self.lease: Lease | None = None
        self.lost: str | None = None  # why the lease was lost (None while held or never acquired)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, stop: threading.Event, on_lost: Callable[[str], None]) -> bool:
        """Wait (every ``retry_s``) until the lease is ours, then start renewing it; False if ``stop`` came first."""
        while not stop.is_set():
            try:
                self.lease = self.leases.acquire(self.camera, self.holder, self.ttl_s)
            except SQLAlchemyError as exc:
                log.warning("camera %s: cannot reach the database to acquire the lease (%s); retrying", self.camera,
                            exc.__class__.__name__)
            if self.lease is not None:
                self.fences.hold(self.lease)
                log.info("camera %s: lease acquired by %s (token %d)", self.camera, self.holder, self.lease.token)
                self._thread = threading.Thread(target=self._renew_loop, args=(on_lost,), daemon=True,
                                                name=f"lease-{self.camera}")
                self._thread.start()
                return True
            stop.wait(self.retry_s)
        return False

    def _renew_loop(self, on_lost: Callable[[str], None]) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            lease = self.lease
            assert lease is not None
            try:
                self.lease = self.leases.renew(self.camera, self.holder, lease.token, self.ttl_s)
                continue
            except LeaseLost as exc:
                reason = str(exc)
            except SQLAlchemyError as exc:
                if self.leases.clock() < lease.expires_at:
                    log.warning("camera %s: lease renewal failed (%s); retrying", self.camera, exc.__class__.__name__)
                    continue
                reason = (f"camera {self.camera}: lease expired while the database was unreachable "
                          f"({exc.__class__.__name__}); another node may record it now")
            self.lost = reason
            self.fences.drop(self.camera)
            log.error("%s", reason)
            on_lost(reason)
            return

    def release(self) -> None:
        """Stop renewing and free the camera (after the worker's last writes: they still carry the token)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self.fences.drop(self.camera)
        lease, self.lease = self.lease, None
        if lease is not None and self.lost is None:
            try:
                self.leases.release(lease)
            except SQLAlchemyError:
                log.warning("camera %s: lease not released (database unreachable); it expires in %g s",
                            self.camera, self.ttl_s)
