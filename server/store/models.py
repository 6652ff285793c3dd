"""The tables: projects, runs, events, metric points and remote commands."""

from sqlalchemy import (
    JSON,
    BigInteger,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# Every run status, in the order the dashboard lists them: the one place they are named
# (`schemas.RunStatus`, the answers and the dashboard's filters derive from it).
RUN_STATUSES = ("running", "paused", "finished", "stopped", "failed", "lost")
# A run still running, paused by a command, or silent for a while (`lost`), may post again;
# the others have ended.
LIVE_STATUSES = ("running", "paused", "lost")
ENDED_STATUSES = tuple(status for status in RUN_STATUSES if status not in LIVE_STATUSES)
# `Run.source` of runs fed by the stock keras.callbacks.RemoteMonitor: named by `?run=`, or not.
STOCK_SOURCES = ("keras", "keras-auto")


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[float] = mapped_column(Double)


class Run(Base):
    """One training run. Times are Unix seconds."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_project_created", "project_id", "created_at", "id"),
        Index("ix_runs_name", "name"),
        Index("ix_runs_status_updated", "status", "updated_at"),
        Index("ix_runs_created", "created_at", "id"),
        Index("ix_runs_updated", "updated_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uid: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="running")
    source: Mapped[str] = mapped_column(String(16), default="client")
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    tags: Mapped[list] = mapped_column(JSON, default=list)
    host: Mapped[str | None] = mapped_column(String(255))
    versions: Mapped[dict] = mapped_column(JSON, default=dict)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    summary: Mapped[dict] = mapped_column(JSON, default=dict)
    epochs_done: Mapped[int] = mapped_column(Integer, default=0)
    last_epoch: Mapped[int | None] = mapped_column(Integer)
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    ended_at: Mapped[float | None] = mapped_column(Double)
    stop_requested_at: Mapped[float | None] = mapped_column(Double)
    stop_reason: Mapped[str | None] = mapped_column(Text)
    stop_acknowledged_at: Mapped[float | None] = mapped_column(Double)
    stopped_at: Mapped[float | None] = mapped_column(Double)

    project: Mapped[Project] = relationship(lazy="joined")


class Event(Base):
    """Something that happened in a run. `seq` is the client's; server events have none."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("run_id", "seq", name="uq_events_run_seq"),
        Index("ix_events_run_id", "run_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    seq: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(64))
    epoch: Mapped[int | None] = mapped_column(Integer)
    step: Mapped[int | None] = mapped_column(BigInteger)
    time: Mapped[float] = mapped_column(Double)
    received_at: Mapped[float] = mapped_column(Double)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    data: Mapped[dict] = mapped_column(JSON, default=dict)


class MetricPoint(Base):
    """One value of one metric at one step. A NULL value is NaN."""

    __tablename__ = "metric_points"
    __table_args__ = (
        Index("ix_points_run_key_step", "run_id", "key", "step"),
        # NaN points are few: a partial index finds them without scanning a series.
        Index(
            "ix_points_nan",
            "run_id",
            "key",
            "step",
            sqlite_where=text("value IS NULL"),
            postgresql_where=text("value IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    step: Mapped[int] = mapped_column(BigInteger)
    epoch: Mapped[int | None] = mapped_column(Integer)
    value: Mapped[float | None] = mapped_column(Double)
    time: Mapped[float] = mapped_column(Double)


# Rollup bucket widths in steps, each 16 times the last: a chart of any span
# reads at most about 16 rollups per bucket it draws.
ROLLUP_WIDTHS = (16, 256, 4096, 65536, 1048576)


class MetricRollup(Base):
    """Min and max of a metric's finite values over steps `[bucket * width, (bucket + 1) * width)`.

    Kept at ingest for a few widths, so a chart of a million-point series reads
    a few thousand rollups instead of every point (see `series.read_series`).
    """

    __tablename__ = "metric_rollups"
    __table_args__ = {"sqlite_with_rowid": False}  # stored in key order: a chart reads a range

    run_id: Mapped[int] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    width: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    first_step: Mapped[int] = mapped_column(BigInteger)
    last_step: Mapped[int] = mapped_column(BigInteger)
    min_value: Mapped[float] = mapped_column(Double)
    max_value: Mapped[float] = mapped_column(Double)
    max_epoch: Mapped[int | None] = mapped_column(Integer)
    max_time: Mapped[float] = mapped_column(Double)
    points: Mapped[int] = mapped_column(BigInteger)


class Command(Base):
    """A remote command to a run's training (`server.commands` holds its rules).

    `epoch` and `step` are where it took effect, as the client reported them.
    """

    __tablename__ = "commands"
    __table_args__ = (Index("ix_commands_run_id", "run_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    value: Mapped[float | None] = mapped_column(Double)
    reason: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str | None] = mapped_column(String(200))
    requested_at: Mapped[float] = mapped_column(Double)
    delivered_at: Mapped[float | None] = mapped_column(Double)
    settled_at: Mapped[float | None] = mapped_column(Double)
    epoch: Mapped[int | None] = mapped_column(Integer)
    step: Mapped[int | None] = mapped_column(BigInteger)


class ApiToken(Base):
    """An API token; only its SHA-256 is stored. `project` scopes it to one project."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    project: Mapped[str | None] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Double)
    last_used_at: Mapped[float | None] = mapped_column(Double)
    revoked_at: Mapped[float | None] = mapped_column(Double)


class DashboardSession(Base):
    """A signed-in browser: the cookie holds a secret whose SHA-256 is `id`."""

    __tablename__ = "dashboard_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double)
