"""Engines and sessions: SQLite (WAL, foreign keys) by default, PostgreSQL through psycopg 3."""

import contextlib
import json
import os
import threading
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

from callboard.server.store.storable import json_safe


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


def sqlite_file(url):
    """The file a SQLite URL names, or None (another database, or one in memory).

    Example:
        >>> str(sqlite_file("sqlite:///runs.db")), sqlite_file("sqlite://")
        ('runs.db', None)
    """
    parsed = make_url(url)
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return None
    if name.startswith("file:"):  # an SQLite URI (`?uri=true`): in memory or special
        return None
    return Path(name)


def describe_database(url):
    """The database a URL names, for people: the SQLite file's full path, else the URL
    with its password hidden."""
    path = sqlite_file(url)
    if path is not None:
        return f"SQLite file {path.resolve()}"
    return make_url(url).render_as_string(hide_password=True)


def create_private_sqlite_file(url):
    """Create a SQLite URL's file, empty and readable by its owner only (0600), if missing.

    SQLite would create it 0644; its -wal and -shm files take the database file's mode.
    """
    path = sqlite_file(url)
    if path is None:
        return
    with contextlib.suppress(OSError):  # it exists, or its folder does not (SQLite says so)
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a server dependency
    orjson = None


def json_dumps(value):
    """JSON text for a JSON column: orjson when it can, else the standard library.

    Values reach JSON columns through `values.json_safe`, so they hold no NaN.
    """
    if orjson is not None:
        try:
            return orjson.dumps(value).decode()
        except TypeError:  # e.g. integers beyond 64 bits
            pass
    return json.dumps(value)


def json_loads(text):
    """A JSON column's value; one stored before `json_safe` existed reads back JSON-safe too."""
    if orjson is not None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:  # NaN tokens or lone surrogates the standard library wrote
            pass
    return json_safe(json.loads(text))


def _configure_sqlite(engine, write_lock):
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
        if mode == "IMMEDIATE" and not write_lock.held_by(connection):
            write_lock.acquire(connection)
        try:  # on the driver: SQLAlchemy's statement machinery costs more than BEGIN itself
            connection.connection.dbapi_connection.execute(f"BEGIN {mode}")
        except BaseException:
            write_lock.release(_dbapi_connection(connection))
            raise

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _on_end(connection):
        write_lock.release(_dbapi_connection(connection))

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection, _record):
        write_lock.release(dbapi_connection)  # in case a transaction ended unseen


def _dbapi_connection(connection):
    try:
        return connection.connection.dbapi_connection
    except Exception:  # closed or invalidated
        return None


class WriteLock:
    """Writers of this process take turns before `BEGIN IMMEDIATE`.

    SQLite lets one writer in at a time; the others sleep in its busy handler
    in growing steps, so under concurrent ingest the lock often sits free while
    they sleep. Queuing on a Python lock hands it over at once. A writer that
    waits longer than `timeout` goes on to SQLite's own locking, as before.
    """

    def __init__(self, timeout=10.0):
        self.timeout = timeout
        self._lock = threading.Lock()
        self._holder = None

    def acquire(self, connection):
        if self._lock.acquire(timeout=self.timeout):
            self._holder = _dbapi_connection(connection)

    def try_acquire(self, connection):
        """Take the lock for `connection` only if it is free now; True if taken."""
        if self._lock.acquire(blocking=False):
            self._holder = _dbapi_connection(connection)
            return True
        return False

    def held_by(self, connection):
        return self._holder is not None and self._holder is _dbapi_connection(connection)

    def release(self, dbapi_connection):
        """Release the lock if `dbapi_connection` holds it; otherwise do nothing."""
        if dbapi_connection is not None and self._holder is dbapi_connection:
            self._holder = None
            self._lock.release()


class Database:
    """One database: a reader and a writer session factory over one pool.

    On SQLite a writer's transaction starts with `BEGIN IMMEDIATE`, so two
    writers queue on the lock instead of failing when both upgrade a read;
    `write_engine` begins its transactions that way too.
    """

    def __init__(self, url):
        self.url = normalize_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        json_options = {"json_serializer": json_dumps, "json_deserializer": json_loads}
        if self.is_sqlite:
            create_private_sqlite_file(self.url)
            self.engine = create_engine(
                self.url, connect_args={"check_same_thread": False, "timeout": 10}, **json_options
            )
            self.write_lock = WriteLock()
            _configure_sqlite(self.engine, self.write_lock)
            self.write_engine = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        else:
            self.engine = create_engine(
                self.url, pool_size=10, max_overflow=20, pool_pre_ping=True, **json_options
            )
            self.write_engine = self.engine
        self.reader = sessionmaker(self.engine, expire_on_commit=False)
        self.writer = sessionmaker(self.write_engine, expire_on_commit=False)

    def dispose(self):
        self.engine.dispose()
