"""Events persist in a real database (SQLite, PostgreSQL) whose schema is created by the Alembic migrations."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from support import free_port
from trustcam.bus import Bus
from trustcam.config.schema import ThreatLevel
from trustcam.events.model import Event, EventEnded
from trustcam.rules.engine import RuleHit
from trustcam.storage.database import MIGRATIONS, DatabaseError, open_database
from trustcam.storage.event_store import EventStore


def make_event(i: int, camera: str = "front") -> Event:
    return Event(
        id=f"{i:032x}", camera=camera, label="person", track_id=i, start=10.0 * i, end=10.0 * i + 5,
        best_score=0.9, best_box=(1, 2, 3, 4), best_time=10.0 * i + 1, zones=["door"],
        rules=[RuleHit("door-entry", "enter_zone", ThreatLevel.high, i, 10.0 * i + 2, "door")],
        snapshot="/x.jpg", model_name="yolox-nano", model_sha256="ab" * 32,
    )


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def test_migrations_create_schema_and_are_idempotent(database_url: str) -> None:
    url = database_url
    engine = open_database(url)
    tables = set(inspect(engine).get_table_names())
    assert {"events", "segments", "alert_outbox", "users", "audit_log", "event_reviews"} <= tables, tables
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head == f"{len(list(MIGRATIONS.glob('versions/0*.py'))):04d}"  # one linear chain, none forgotten
    with engine.connect() as connection:
        assert connection.execute(text("select version_num from alembic_version")).scalar() == head
    open_database(url)  # second start: nothing to migrate, nothing lost


def test_events_published_on_the_bus_are_stored(database_url: str) -> None:
    store = EventStore(open_database(database_url))
    bus = Bus()
    store.attach(bus)
    for i in range(3):
        bus.publish(EventEnded(make_event(i, camera="front" if i < 2 else "back")))
    rows = store.recent()
    assert [r.track_id for r in rows] == [2, 1, 0]
    assert rows[0].rules[0]["name"] == "door-entry" and rows[0].threat == "high"
    assert rows[0].model_sha256 == "ab" * 32 and rows[0].zones == ["door"]
    assert [r.camera for r in store.recent(camera="back")] == ["back"]


def test_unwritable_database_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DatabaseError, match="cannot open or migrate"):
        open_database(f"sqlite:///{blocker / 'sub' / 'trustcam.db'}")


def test_servers_starting_at_once_migrate_one_after_the_other(postgres_url: str) -> None:
    """Several trustcam processes started together on one empty PostgreSQL database: all come up, schema once."""
    errors: list[BaseException] = []

    def start() -> None:
        try:
            open_database(postgres_url).dispose()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    with open_database(postgres_url).connect() as connection:
        assert connection.execute(text("select count(*) from alembic_version")).scalar() == 1


def test_unreachable_postgresql_is_a_clear_error_without_the_password() -> None:
    url = f"postgresql://trustcam:s3cret-pw@127.0.0.1:{free_port()}/trustcam"  # nothing listens there
    with pytest.raises(DatabaseError, match=r"(?s)cannot connect or migrate.*check that the server is up") as caught:
        open_database(url)
    assert "s3cret-pw" not in str(caught.value) and "127.0.0.1" in str(caught.value)
