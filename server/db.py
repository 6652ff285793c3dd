"""Engines and sessions: SQLite (WAL, foreign keys) by default, PostgreSQL through psycopg 3."""

from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker


def normalize_url(url):
    """Pick our drivers: `postgresql://` means psycopg 3.

    Example:
        >>> normalize_url("postgresql://u@h/db")
        'postgresql+psycopg://u@h/db'
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _configure_sqlite(engine):
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # We issue BEGIN ourselves so writers can take the lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """One database: a reader and a writer session factory over one pool.

    On SQLite a writer's transaction starts with `BEGIN IMMEDIATE`, so two
    writers queue on the lock instead of failing when both upgrade a read.
    """

    def __init__(self, url):
        self.url = normalize_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = create_engine(
                self.url, connect_args={"check_same_thread": False, "timeout": 10}
            )
            _configure_sqlite(self.engine)
            writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        else:
            self.engine = create_engine(self.url, pool_size=10, max_overflow=20, pool_pre_ping=True)
            writer = self.engine
        self.reader = sessionmaker(self.engine, expire_on_commit=False)
        self.writer = sessionmaker(writer, expire_on_commit=False)

    def dispose(self):
        self.engine.dispose()
