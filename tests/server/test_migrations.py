import pytest
from sqlalchemy import inspect

from callboard.server.store import migrate
from callboard.server.store.db import Database

TABLES = {"projects", "runs", "events", "metric_points", "alembic_version"}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    url = request.getfixturevalue("postgres_url")
    migrate.downgrade(url, "base") if migrate.current_revision(url) else None
    return url


def table_names(url):
    database = Database(url)
    try:
        return set(inspect(database.engine).get_table_names())
    finally:
        database.dispose()


def test_upgrade_downgrade_upgrade_on_a_fresh_database(empty_database_url):
    url = empty_database_url
    migrate.upgrade(url)
    assert table_names(url) >= TABLES
    head = migrate.current_revision(url)
    assert head is not None
    migrate.downgrade(url, "base")
    assert table_names(url) & TABLES <= {"alembic_version"}
    assert migrate.current_revision(url) is None
    migrate.upgrade(url)
    assert migrate.current_revision(url) == head


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path):
    url = f"sqlite:///{tmp_path / 'wal.db'}"
    migrate.upgrade(url)
    database = Database(url)
    with database.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    database.dispose()
