"""Alembic environment: the database URL comes from the server's settings."""

from alembic import context

from callboard.server.settings import Settings
from callboard.server.store.db import Database
from callboard.server.store.models import Base

# pg_advisory_xact_lock key: "callboar" in ASCII, a constant no other lock should share.
MIGRATION_LOCK_ID = 0x63616C6C626F6172
url = context.config.get_main_option("sqlalchemy.url") or Settings().database_url


def run_migrations_offline():
    context.configure(url=Database(url).url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    database = Database(url)
    with database.engine.connect() as connection:
        _run(connection)
    database.dispose()


def _run(connection):
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Replicas starting at once on an empty database migrate one at a time;
            # the later ones find it at head. The lock ends with the transaction.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
