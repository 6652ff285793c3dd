import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Index, MetaData, Text, inspect

from callboard.server.store import migrate
from callboard.server.store.db import Database
from callboard.server.store.models import Base

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


def schema_differences(url, metadata=Base.metadata):
    """What Alembic's autogenerate would change in the database at `url` to match `metadata`."""
    database = Database(url)
    try:
        with database.engine.connect() as connection:
            options = {"compare_type": True, "compare_server_default": True}
            context = MigrationContext.configure(connection, opts=options)
            return compare_metadata(context, metadata)
    finally:
        database.dispose()


def test_the_migrations_build_the_models_tables(empty_database_url):
    migrate.upgrade(empty_database_url)
    assert schema_differences(empty_database_url) == []


def test_a_model_the_migrations_lack_is_a_difference(empty_database_url):
    migrate.upgrade(empty_database_url)
    metadata = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(metadata)
    runs = metadata.tables["runs"]
    runs.append_column(Column("remark", Text))
    Index("ix_runs_host", runs.c.host)
    changes = sorted(schema_differences(empty_database_url, metadata), key=lambda c: c[0])
    assert [change[0] for change in changes] == ["add_column", "add_index"]
    assert (changes[0][2], changes[0][3].name) == ("runs", "remark")
    assert changes[1][1].name == "ix_runs_host"


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
