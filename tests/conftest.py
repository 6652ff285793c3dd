"""Shared fixtures: databases (SQLite and PostgreSQL), an in-process app, real servers."""

import os
import uuid

import pytest

from tests.server_process import ServerProcess

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

POSTGRES_ADMIN_URL = os.environ.get(
    "CALLBOARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
TABLES = ("metric_points", "events", "runs", "projects", "api_tokens", "rules")


@pytest.fixture(autouse=True)
def _spool_dir(tmp_path, monkeypatch):
    """Keep every client's spool inside the test's own folder."""
    monkeypatch.setenv("CALLBOARD_SPOOL_DIR", str(tmp_path / "spool"))
    return tmp_path / "spool"


@pytest.fixture(autouse=True)
def _test_client_host(monkeypatch):
    """Serve the Host name TestClient uses ("testserver") besides the loopback ones."""
    monkeypatch.setenv("CALLBOARD_ALLOWED_HOSTS", "testserver")


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    import psycopg

    name = f"callboard_test_{uuid.uuid4().hex[:10]}"
    admin = POSTGRES_ADMIN_URL
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """An empty, migrated database: a SQLite file, or the session's PostgreSQL emptied."""
    from callboard.server.store import migrate

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'callboard.db'}"
        migrate.upgrade(url)
        return url
    url = request.getfixturevalue("postgres_url")
    migrate.upgrade(url)
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    return url


@pytest.fixture
def settings(database_url):
    from callboard.server.settings import Settings

    return Settings(database_url=database_url, skip_migrations=True, sweep_interval_seconds=0.2)


@pytest.fixture
def api(settings):
    """A TestClient on a fresh app (SQLite and PostgreSQL), lifespan included."""
    from fastapi.testclient import TestClient

    from callboard.server.main import create_app

    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def server_factory(tmp_path):
    """Make real servers: `server_factory()` on a fresh SQLite file, or `(database_url)`."""
    servers = []

    def make(database_url=None, **kwargs):
        url = database_url or f"sqlite:///{tmp_path / f'server{len(servers)}.db'}"
        server = ServerProcess(url, **kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def receiver():
    """A real webhook receiver on 127.0.0.1 (`tests/webhook_receiver.py`)."""
    from tests.webhook_receiver import Receiver

    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """One real server for the session, on its SQLite default, at `live_server.root`."""
    path = tmp_path_factory.mktemp("live") / "callboard.db"
    server = ServerProcess(f"sqlite:///{path}").start()
    yield server
    server.stop()
