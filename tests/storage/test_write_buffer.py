"""The local buffer for database writes (storage/write_buffer.py), on real databases: a PostgreSQL URL whose port
nothing listens on (connection refused: the server is down) and a real SQLite file standing for the server once it
is back. Writes go straight through while the database answers, wait in order while it does not, are stored once
each when it returns, and beyond the bound the oldest are dropped, counted, logged and reported by a health alert."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.orm import Session

from support import free_port, wait_until
from trustcam.alerts.dispatcher import AlertDispatcher
from trustcam.alerts.model import Alert, Severity
from trustcam.alerts.outbox import OutboxRow
from trustcam.bus import Bus
from trustcam.config.schema import Settings, VaultConfig
from trustcam.events.model import Event, EventEnded
from trustcam.storage.database import open_database
from trustcam.storage.event_store import EventStore
from trustcam.storage.keys import ENV_KEK
from trustcam.storage.leases import Fences, Lease, LeaseLost
from trustcam.storage.schema import CheckpointRow
from trustcam.storage.vault import Vault
from trustcam.storage.write_buffer import WriteBuffer


def make_event(i: int, camera: str = "front") -> Event:
    return Event(id=f"{i:032x}", camera=camera, label="person", track_id=i, start=10.0 * i, end=10.0 * i + 5,
                 best_score=0.9, best_box=(1, 2, 3, 4), best_time=10.0 * i + 1, model_name="yolox-nano")


@pytest.fixture
def down() -> Engine:
    """A PostgreSQL server that is down: nothing listens on the port, every connection is refused at once."""
    return create_engine(f"postgresql+psycopg://trustcam@127.0.0.1:{free_port()}/trustcam",
                         connect_args={"connect_timeout": 2})


@pytest.fixture
def back(tmp_path: Path) -> Engine:
    """The database once it is back (a real, migrated SQLite file)."""
    return open_database(f"sqlite:///{tmp_path / 'data' / 'trustcam.db'}")


def stored_events(engine: Engine) -> list[str]:
    """Event ids in the order they were inserted (SQLite's rowid)."""
    with engine.connect() as connection:
        return [row[0] for row in connection.execute(text("SELECT id FROM events ORDER BY rowid"))]


def test_writes_go_straight_through_while_the_database_answers(back: Engine) -> None:
    bus = Bus()
    store = EventStore(back)
    store.attach(bus)
    bus.publish(EventEnded(make_event(1)))
    assert stored_events(back) == [make_event(1).id]  # stored before publish returned: the vault's seal reads it
    assert store.writes.pending == 0 and store.writes._thread is None  # no thread until the database fails once


def test_an_outage_queues_events_in_order_and_stores_each_once_when_the_database_is_back(down: Engine,
                                                                                         back: Engine) -> None:
    bus = Bus()
    store = EventStore(down)
    store.attach(bus)
    alerts: list[Alert] = []
    bus.subscribe(Alert, alerts.append)
    started = time.monotonic()
    for i in range(20):
        bus.publish(EventEnded(make_event(i)))
    assert time.monotonic() - started < 2.0, "the camera thread waited on a database that is down"
    time.sleep(0.5)  # several retries fail meanwhile
    assert store.writes.pending == 20 and store.writes.lost == 0
    store.engine = back  # the server is back
    assert store.writes.flush(10), "buffered events not stored within 10 s of the database's return"
    assert stored_events(back) == [make_event(i).id for i in range(20)]  # in order, each once
    assert store.writes.stored_late == 20 and not alerts
    bus.publish(EventEnded(make_event(99)))  # and writes go straight through again
    assert stored_events(back)[-1] == make_event(99).id


def test_an_event_stored_after_an_outage_is_sealed_into_the_chain(down: Engine, back: Engine, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """With recording on, an event that ended while the database was away is sealed once it is stored (its seal
    waits behind it in the same buffer): `evidence chain` finds every event sealed, none "never sealed"."""
    monkeypatch.delenv(ENV_KEK, raising=False)
    vault = Vault(VaultConfig(root=tmp_path / "rec", key_file=tmp_path / "keys" / "vault.kek",
                              signing_key_file=tmp_path / "keys" / "signing.key"), back)
    now = time.time()
    vault.store_segment("front", b"footage before the outage", now - 10, now - 5)
    store = EventStore(down)
    store.seal = vault.seal_event
    bus = Bus()
    store.attach(bus)
    events = [Event(id=f"{i:032x}", camera="front", label="person", track_id=i, start=now - 4 + i, end=now - 3 + i,
                    best_score=0.9, best_box=(1, 2, 3, 4), best_time=now - 4 + i, model_name="yolox-nano")
              for i in range(3)]
    for event in events:
        bus.publish(EventEnded(event))
    assert store.writes.pending == 6, "each event's row and then its seal wait for the database"
    store.engine = back  # the server is back
    assert store.writes.flush(10)
    assert stored_events(back) == [e.id for e in events] and store.writes.refused == 0
    with Session(back) as session:
        sealed = [entry[0] for cp in session.scalars(select(CheckpointRow).order_by(CheckpointRow.id))
                  for entry in cp.events or []]
    assert sealed == [e.id for e in events]
    assert vault.verify_chain() == []


def test_beyond_the_bound_the_oldest_are_dropped_counted_logged_and_reported(down: Engine, back: Engine,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    bus = Bus()
    store = EventStore(down, buffer=3)
    store.attach(bus)
    alerts: list[Alert] = []
    bus.subscribe(Alert, alerts.append)
    with caplog.at_level(logging.INFO, logger="trustcam.storage.write_buffer"):
        for i in range(1, 6):
            bus.publish(EventEnded(make_event(i)))
        wait_until(lambda: store.writes.lost == 2 and store.writes.pending == 3, 5, "two dropped, three waiting")
        assert not alerts  # reported once the database can take the report
        store.engine = back
        assert store.writes.flush(10)
    assert stored_events(back) == [make_event(i).id for i in (3, 4, 5)]  # the newest kept, in order
    assert store.writes.lost == 2
    assert "event write buffer full (3 writes, database_buffer): dropping the oldest (event " in caplog.text
    assert "2 were LOST" in caplog.text
    [lost] = alerts
    assert lost.kind == "health" and lost.severity == Severity.high
    assert lost.data == {"problem": "database_writes_lost", "buffer": "event", "lost": 2, "capacity": 3}
    assert "2 event write(s) LOST" in lost.message


def test_a_refusal_is_not_buffered(back: Engine) -> None:
    """Only failures retrying can cure wait: a write the database refuses (no lease held) fails as before."""
    store = EventStore(back, Fences())
    with pytest.raises(LeaseLost):
        store.writes.submit(lambda: store.save(make_event(1)), "event 1")
    assert store.writes.pending == 0 and stored_events(back) == []


def test_a_buffered_event_whose_lease_was_lost_meanwhile_is_refused_not_retried(down: Engine, back: Engine) -> None:
    """With camera leases, an outage that outlasts the lease must not let the old holder's events in afterwards:
    the fence is checked when the buffered write runs, and the refused write is dropped, not retried forever."""
    fences = Fences()
    fences.hold(Lease("front", "node-a", 1, time.time() + 15))
    store = EventStore(down, fences)
    store.writes.submit(lambda: store.save(make_event(1)), "event 1")
    assert store.writes.pending == 1
    store.engine = back  # back, but the camera's lease row says node-a no longer holds token 1
    assert store.writes.flush(10)
    assert store.writes.refused == 1 and store.writes.lost == 0 and stored_events(back) == []


def test_close_with_the_database_still_down_counts_and_logs_what_is_lost(down: Engine,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    store = EventStore(down)
    for i in range(4):
        store.save_soon(make_event(i))
    with caplog.at_level(logging.ERROR, logger="trustcam.storage.write_buffer"):
        store.close(timeout=0.3)
    assert store.writes.lost == 4 and store.writes.pending == 0
    assert "4 event write(s) NOT STORED: the database was still unreachable at shutdown" in caplog.text


def test_alerts_raised_during_an_outage_are_queued_in_order_once_it_is_back(down: Engine, back: Engine) -> None:
    """The dispatcher's outbox writes use their own buffer, bounded by database_buffer; the lost-writes report is a
    health alert queued like any other once the database is back."""
    bus = Bus()
    dispatcher = AlertDispatcher(Settings(database_buffer=3), down, bus)
    assert dispatcher.writes.capacity == 3
    raised = [Alert(kind="rule", severity=Severity.high, message=f"alert {i}", camera="front") for i in range(5)]
    for alert in raised:
        bus.publish(alert)
    wait_until(lambda: dispatcher.writes.lost == 2, 5, "the two oldest alerts dropped")
    dispatcher.outbox.engine = back
    wait_until(lambda: dispatcher.writes.pending == 0 and len(dispatcher.outbox.rows()) == 4, 10,
               "the buffered alerts and the report queued")
    with Session(back) as session:
        rows = session.scalars(select(OutboxRow).order_by(OutboxRow.id))
        queued = [(row.alert_id, row.kind, row.sink) for row in rows]
    assert queued[:3] == [(alert.id, "rule", "log") for alert in raised[2:]]
    assert queued[3][1:] == ("health", "log")
    [report] = dispatcher.outbox.rows(alert_id=queued[3][0])
    assert report.alert.data["lost"] == 2 and report.alert.data["buffer"] == "alert"


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        WriteBuffer("event", 0)
