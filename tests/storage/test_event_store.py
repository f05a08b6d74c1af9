"""Events persist in a real SQLite database whose schema is created by the Alembic migrations."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

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


def test_migrations_create_schema_and_are_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db' / 'trustcam.db'}"
    engine = open_database(url)
    tables = set(inspect(engine).get_table_names())
    assert {"events", "segments", "alert_outbox", "users", "audit_log", "event_reviews"} <= tables, tables
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head == f"{len(list(MIGRATIONS.glob('versions/0*.py'))):04d}"  # one linear chain, none forgotten
    with engine.connect() as connection:
        assert connection.execute(text("select version_num from alembic_version")).scalar() == head
    open_database(url)  # second start: nothing to migrate, nothing lost


def test_events_published_on_the_bus_are_stored(tmp_path: Path) -> None:
    store = EventStore(open_database(f"sqlite:///{tmp_path / 'trustcam.db'}"))
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
