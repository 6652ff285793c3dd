"""Live fan-out: tells stream handlers which run changed, on one replica or several."""

from callboard.server.live.hub import LiveHub


def make_hub(database_url):
    """The hub for `database_url`: `PostgresHub` (LISTEN/NOTIFY) on PostgreSQL, else in-process.

    Replicas sharing one PostgreSQL database see each other's publishes.
    """
    from sqlalchemy.engine import make_url

    from callboard.server.store.db import normalize_url

    if make_url(normalize_url(database_url)).get_backend_name() == "postgresql":
        from callboard.server.live.postgres import PostgresHub

        return PostgresHub(database_url)
    return LiveHub()
