"""Fresh PostgreSQL databases for tests that need one all to themselves."""

import contextlib
import uuid

from tests.conftest import POSTGRES_ADMIN_URL


@contextlib.contextmanager
def fresh_postgres_database(prefix="callboard_test"):
    """Create an empty database on the test server, yield its URL, drop it afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
