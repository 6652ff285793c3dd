"""Server settings, from arguments or `CALLBOARD_*` environment variables."""

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///callboard.db"


class Settings(BaseSettings):
    """Everything the server can be told; each field also reads `CALLBOARD_<NAME>`.

    `allowed_hosts` is a comma-separated list of Host names the server answers
    (`*`: any; `.example.org`: that domain and its subdomains). Unset, a server
    with no token answers only loopback names and one with tokens answers any.

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
    max_streams: int = 256  # live (SSE) streams served at once; more get 503
    default_max_points: int = 2000
    max_body_bytes: int = 8 * 1024 * 1024
    max_values_per_request: int = 50_000
    ingest_rate_per_second: float = 100.0
    ingest_burst: int = 300
    session_days: float = 7.0
    # Never serve open mode (anonymous = admin); `serve` sets it on a non-loopback bind.
    require_tokens: bool = False
    allowed_hosts: str | None = None
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 20.0
    # The dashboard's address as people reach it, for links in alerts (default: the address
    # the rule's author used).
    public_url: str | None = None
    # A token Prometheus may scrape `GET /metrics` with, besides any `read` token.
    metrics_token: str | None = None
    max_connections: int = 4096  # each training holds one for its commands; 40 KiB each
