"""Server settings, from arguments or `CALLBOARD_*` environment variables."""

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///callboard.db"


class Settings(BaseSettings):
    """Everything the server can be told; each field also reads `CALLBOARD_<NAME>`.

    Example:
        >>> Settings(database_url="sqlite:///runs.db").database_url
        'sqlite:///runs.db'
    """

    model_config = SettingsConfigDict(env_prefix="CALLBOARD_")

    database_url: str = DEFAULT_DATABASE_URL
    skip_migrations: bool = False
    lost_after_seconds: float = 60.0
    sweep_interval_seconds: float = 5.0
    stream_keepalive_seconds: float = 15.0
    default_max_points: int = 2000
    max_body_bytes: int = 8 * 1024 * 1024
    ingest_rate_per_second: float = 100.0
    ingest_burst: int = 300
    session_days: float = 7.0
    # Never serve open mode (anonymous = admin); `serve` sets it on a non-loopback bind.
    require_tokens: bool = False
