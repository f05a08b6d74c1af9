"""Open the database and bring its schema up to date with Alembic before anything reads or writes."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError

from trustcam.errors import UserError

MIGRATIONS = Path(__file__).with_name("migrations")


class DatabaseError(UserError):
    """The database cannot be opened or migrated; the message names the URL and the fix."""


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the camera threads writing events
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def open_database(url: str) -> Engine:
    """Create the engine for ``url`` (creating a SQLite file's folder) and run migrations to head."""
    try:
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except (SQLAlchemyError, OSError) as exc:
        raise DatabaseError(f"database {url}: cannot open or migrate ({exc.__class__.__name__}: {exc}); "
                            "check the path's permissions and free disk space") from None
    return engine
