"""Writes the database cannot take right now wait in a bounded local FIFO and are retried, in order, by one thread.

A PostgreSQL restart (or a SQLite file locked for too long) must neither lose the events and alerts a camera
produces meanwhile nor make the camera wait on the database. :class:`WriteBuffer` does one job: while the database
answers, a write runs at once in the caller's thread (a stored event is in the database when ``EventEnded`` has
been handled, as the vault's sealing relies on); once a write fails for a reason retrying can cure, it and every
later write are queued without touching the database, and one background thread retries the oldest with backoff
until the queue is empty again. The queue holds at most ``capacity`` writes: beyond that the oldest are dropped,
counted, logged, and reported through ``on_lost`` once the database is back. The writes must be idempotent (a
commit whose answer was lost is retried): an event is merged by id, an outbox row is unique per (alert, sink).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from trustcam.alerts.model import Alert, Severity

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 10_000  # per buffer (events, alerts): ~30 min of 60 busy cameras' events, ~20 MB at most
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0  # the database is retried at least this often: the queue drains within 5 s of its return
REPORT_EVERY_S = 10.0  # drop and retry messages while the database stays away: one line per this, not per write

Write = Callable[[], None]


def transient(exc: BaseException) -> bool:
    """A failure retrying can cure: the server unreachable, shutting down or starting up, the connection dropped,
    the pool exhausted, SQLite locked. Anything else (a constraint, a refused fence, a bug) is not retried."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError | PoolTimeout)


def lost_alert(buffer: str, lost: int, capacity: int) -> Alert:
    """The ``health`` alert saying how many buffered writes an outage cost (published once the database is back)."""
    return Alert(kind="health", severity=Severity.high, message=(
        f"database outage: {lost} {buffer} write(s) LOST: the local buffer holds {capacity} and the oldest were "
        "dropped; raise database_buffer or make the database highly available"),
        data={"problem": "database_writes_lost", "buffer": buffer, "lost": lost, "capacity": capacity})


@dataclass(frozen=True)
class Pending:
    what: str  # for the log: "event <id>", "alert <id>"
    write: Write


class WriteBuffer:
    """A bounded FIFO of writes waiting for the database, drained by one thread (started on the first failure)."""

    def __init__(self, name: str, capacity: int = DEFAULT_CAPACITY, on_lost: Callable[[int], None] | None = None,
                 retry_first_s: float = RETRY_FIRST_S, retry_max_s: float = RETRY_MAX_S) -> None:
        if capacity < 1:
            raise ValueError(f"write buffer {name}: capacity must be >= 1, got {capacity}")
        self.name, self.capacity, self.on_lost = name, capacity, on_lost
        self.retry_first_s, self.retry_max_s = retry_first_s, retry_max_s
        self.lost = 0  # writes dropped (buffer full, or still waiting at close): counters for status and tests
        self.refused = 0  # queued writes that failed for good when retried (e.g. the lease was lost meanwhile)
        self.stored_late = 0  # writes stored by the retry thread
        self._queue: deque[Pending] = deque()
        self._inflight: Pending | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._episode_lost = 0  # dropped since the queue was last empty: reported when it empties
        self._outage_since: float | None = None
        self._last_report = 0.0

    @property
    def pending(self) -> int:
        """Writes waiting for the database (0: it answers and writes go straight through)."""
        with self._cond:
            return len(self._queue) + (self._inflight is not None)

    def submit(self, write: Write, what: str) -> bool:
        """Run ``write`` now if nothing waits, else queue it behind the others (order holds). True when stored now.
        A failure retrying cannot cure is raised, as without the buffer; a transient one queues the write."""
        with self._cond:
            if self._queue or self._inflight is not None:
                self._append(Pending(what, write))
                return False
        try:
            write()
            return True
        except Exception as exc:
            if not transient(exc):
                raise
            with self._cond:
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    log.warning("database unreachable (%s: %s); %s and later %s writes wait in a local buffer of "
                                "%d and are retried every %g s at most", type(exc).__name__, _first_line(exc),
                                what, self.name, self.capacity, self.retry_max_s)
                self._append(Pending(what, write))
            return False

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the queue to empty; True when it did."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._inflight is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Give waiting writes ``timeout`` s to be stored, then stop the thread; what is still queued is lost
        (counted and logged: the database stayed unreachable until the end)."""
        self.flush(timeout)
        self._stop.set()
        with self._cond:
            left = len(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.retry_max_s + 1)
        if left:
            self.lost += left
            log.error("%d %s write(s) NOT STORED: the database was still unreachable at shutdown", left, self.name)

    # --- inside the lock --------------------------------------------------------------------------------
    def _append(self, item: Pending) -> None:
        self._queue.append(item)
        if len(self._queue) > self.capacity:
            dropped = self._queue.popleft()
            self.lost += 1
            self._episode_lost += 1
            now = time.monotonic()
            if self._episode_lost == 1 or now - self._last_report >= REPORT_EVERY_S:
                self._last_report = now
                log.error("%s write buffer full (%d writes, database_buffer): dropping the oldest (%s); %d lost in "
                          "this outage so far", self.name, self.capacity, dropped.what, self._episode_lost)
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._drain, name=f"db-buffer-{self.name}", daemon=True)
            self._thread.start()
        self._cond.notify_all()

    # --- the retry thread -------------------------------------------------------------------------------
    def _drain(self) -> None:
        delay = self.retry_first_s
        while True:
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._cond.wait()
                if not self._queue:
                    return
                item = self._inflight = self._queue.popleft()
            if self._attempt(item):
                delay = self.retry_first_s
                self._settled()
            elif self._stop.wait(delay):
                return
            else:
                delay = min(2 * delay, self.retry_max_s)

    def _attempt(self, item: Pending) -> bool:
        """One try of the oldest write; False (put back first in line) when the database is still away."""
        try:
            item.write()
            self.stored_late += 1
        except Exception as exc:
            if transient(exc):
                with self._cond:
                    self._inflight = None
                    self._queue.appendleft(item)
                    if len(self._queue) > self.capacity:  # filled up while it was tried: it is the oldest
                        self._queue.popleft()
                        self.lost += 1
                        self._episode_lost += 1
                    now = time.monotonic()
                    if now - self._last_report >= REPORT_EVERY_S:
                        self._last_report = now
                        log.warning("database still unreachable (%s); %d %s write(s) waiting", type(exc).__name__,
                                    len(self._queue), self.name)
                return False
            self.refused += 1
            log.error("%s: not stored, the database refused it (%s: %s)", item.what, type(exc).__name__,
                      _first_line(exc))
        return True

    def _settled(self) -> None:
        """The in-flight write is done: when the queue is empty the outage is over; report what it cost (still
        counted as pending meanwhile, so that writes submitted by the report queue behind and flush waits)."""
        with self._cond:
            if self._queue:
                self._inflight = None
                self._cond.notify_all()
                return
            lost, self._episode_lost = self._episode_lost, 0
            since, self._outage_since = self._outage_since, None
        try:
            self._report(lost, since)
        finally:
            with self._cond:
                self._inflight = None
                self._cond.notify_all()

    def _report(self, lost: int, since: float | None) -> None:
        took = f" after {time.monotonic() - since:.1f} s" if since is not None else ""
        if lost:
            log.error("database back%s: buffered %s writes stored, but %d were LOST (buffer of %d full)", took,
                      self.name, lost, self.capacity)
            if self.on_lost is not None:
                try:
                    self.on_lost(lost)
                except Exception:
                    log.exception("%s write buffer: reporting %d lost writes failed", self.name, lost)
        else:
            log.info("database back%s: every buffered %s write stored", took, self.name)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
