"""Schema migrations: Alembic, run at server start and by `callboard db upgrade`."""

from pathlib import Path

from alembic import command
from alembic.config import Config

import callboard.migrations


def alembic_config(database_url):
    """An Alembic config for `database_url`, using the migrations shipped in the package."""
    config = Config()
    config.set_main_option("script_location", str(Path(callboard.migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url, revision="head"):
    """Bring the database at `database_url` to `revision` (default: the newest)."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url, revision):
    """Take the database at `database_url` back to `revision` ("base" empties it)."""
    command.downgrade(alembic_config(database_url), revision)


def current_revision(database_url):
    """The revision the database is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    from callboard.server.store.db import Database

    database = Database(database_url)
    try:
        with database.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        database.dispose()
