"""Open the database and bring its schema up to date with Alembic before anything reads or writes."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import SQLAlchemyError

from trustcam.errors import UserError
from trustcam.storage.private import private_dir, private_file, tighten

MIGRATIONS = Path(__file__).with_name("migrations")


class DatabaseError(UserError):
    """The database cannot be opened or migrated; the message names the URL and the fix."""


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the camera threads writing events
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None for another database or an in-memory one)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _private_sqlite(path: Path) -> None:
    """The database holds events, users and audit entries: its folder (data_dir by default) is created 0700 and the
    file 0600 before SQLite opens it; SQLite gives its -wal and -shm files the database file's mode."""
    private_dir(path.parent)
    private_file(path)


def open_database(url: str) -> Engine:
    """Create the engine for ``url`` (a SQLite file and its folder owner-only) and run migrations to head."""
    try:
        database = sqlite_file(url)
        if database is not None:
            _private_sqlite(database)
        engine = create_engine(url)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        for suffix in ("-wal", "-shm", "-journal") if database is not None else ():
            tighten(f"{database}{suffix}")  # left by an older version or made by another process: owner-only too
    except (SQLAlchemyError, OSError) as exc:
        raise DatabaseError(f"database {url}: cannot open or migrate ({exc.__class__.__name__}: {exc}); "
                            "check the path's permissions and free disk space") from None
    return engine
