"""Open the database and bring its schema up to date with Alembic before anything reads or writes."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from trustcam.errors import UserError
from trustcam.storage.private import private_dir, private_file, tighten

MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATION_LOCK = 0x7472757374636D01  # PostgreSQL advisory lock key held while migrating ("trustcm" + 1)
# libpq: a server that does not answer (a partitioned network, not a refused port) fails a connection attempt after
# 5 s and a connection whose data goes unacknowledged after 10 s, instead of after the kernel's minutes: a write
# that meets an outage fails fast and waits in the local buffer (storage/write_buffer.py). A URL's own values win.
PG_TIMEOUTS = {"connect_timeout": 5, "tcp_user_timeout": 10_000}


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


def engine_url(url: str) -> str:
    """``postgresql://`` means psycopg 3, the driver trustcam installs (SQLAlchemy's default would be psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def _safe(url: str) -> str:
    """The URL as error messages show it: never the password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not even a URL: it names nothing secret we could parse out
        return url


def open_database(url: str) -> Engine:
    """Create the engine for ``url`` (a SQLite file and its folder owner-only; a PostgreSQL server guards its own
    files) and run migrations to head."""
    database: Path | None = None
    try:
        database = sqlite_file(url)
        if database is not None:
            _private_sqlite(database)
        postgres = make_url(url).get_backend_name() == "postgresql"
        engine = create_engine(engine_url(url), pool_pre_ping=postgres,  # pooled connections die with a restart
                               connect_args={k: v for k, v in PG_TIMEOUTS.items() if k not in make_url(url).query}
                               if postgres else {})
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":  # several processes starting at once migrate one at a time
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        for suffix in ("-wal", "-shm", "-journal") if database is not None else ():
            tighten(f"{database}{suffix}")  # left by an older version or made by another process: owner-only too
    except (SQLAlchemyError, OSError) as exc:
        where = _safe(url)
        if database is None:
            raise DatabaseError(f"database {where}: cannot connect or migrate ({exc.__class__.__name__}: {exc}); "
                                "check that the server is up, the URL's host, port, user and password, and that "
                                "the database exists (createdb)") from None
        raise DatabaseError(f"database {where}: cannot open or migrate ({exc.__class__.__name__}: {exc}); "
                            "check the path's permissions and free disk space") from None
    except ModuleNotFoundError as exc:  # a URL naming a driver that is not installed (e.g. postgresql+psycopg2)
        raise DatabaseError(f"database {_safe(url)}: driver {exc.name} is not installed; use postgresql://… "
                            "(psycopg 3, installed with trustcam) or sqlite:///…") from None
    return engine


def lock_chain(session: Session, chain: str) -> None:
    """Make this transaction the only writer of hash chain ``chain`` (the audit log, one camera's footage) until it
    ends, across processes: on PostgreSQL a transaction-scoped advisory lock, taken before the head is read, so the
    next writer reads the head this one commits instead of failing on the unique seq and retrying. It works on an
    empty chain too (no head row to lock with SELECT … FOR UPDATE). SQLite lets one writer in at a time anyway."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:chain))"), {"chain": f"trustcam:{chain}"})
