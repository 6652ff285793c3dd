"""The tables: projects, runs, events, metric points, remote commands, rules and their firings."""

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
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
        Index("ix_runs_archived", "archived_at"),
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
    # When the training last sent an event (heartbeats don't count): what `silent` rules watch.
    last_event_at: Mapped[float | None] = mapped_column(Double)
    # The user's note on the run (Markdown), and when it was archived (hidden from the list).
    note: Mapped[str | None] = mapped_column(Text)
    archived_at: Mapped[float | None] = mapped_column(Double)

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
    """Min and max of a metric's values over steps `[bucket * width, (bucket + 1) * width)`.

    NaN points are left out (`points` counts the others); `finite_sum` and
    `finite_points` are the sum and count of the finite ones within ±1e300
    (`rollups.SUMMABLE_LIMIT`): what means over buckets of steps need.

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
    # Nullable only because migration 0008 added them; every row has them since.
    finite_sum: Mapped[float | None] = mapped_column(Double)
    finite_points: Mapped[int | None] = mapped_column(BigInteger)


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


class Rule(Base):
    """A rule the server evaluates on every run of `project` (None: every project).

    `condition` and `actions` are the validated JSON of `rules.schemas`; a webhook's
    secret is kept here to sign its posts and never answered. `base_url` is the
    dashboard address the rule's links point to.
    """

    __tablename__ = "rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    project: Mapped[str | None] = mapped_column(String(200))
    condition: Mapped[dict] = mapped_column(JSON)
    actions: Mapped[list] = mapped_column(JSON)
    base_url: Mapped[str | None] = mapped_column(String(1000))
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[float] = mapped_column(Double)


class RuleState(Base):
    """Where one rule stands on one run: inside a condition episode (`active`) or not.

    `episode` counts the episodes that fired; `cursor` is the last metric step
    evaluated when the state last changed; `version` makes each change
    compare-and-set, so of two replicas judging the same run only one fires.
    """

    __tablename__ = "rule_states"

    rule_id: Mapped[int] = mapped_column(
        ForeignKey("rules.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    run_id: Mapped[int] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    active: Mapped[bool] = mapped_column(Boolean)
    episode: Mapped[int] = mapped_column(Integer)
    cursor: Mapped[int | None] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer)


class RuleFiring(Base):
    """A rule fired on a run: once per (rule, run, episode); `done` lists what each action did."""

    __tablename__ = "rule_firings"
    __table_args__ = (
        UniqueConstraint("rule_id", "run_id", "episode", name="uq_rule_firings_episode"),
        Index("ix_rule_firings_fired_at", "fired_at"),
        Index("ix_rule_firings_run_id", "run_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("rules.id", ondelete="CASCADE"))
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    episode: Mapped[int] = mapped_column(Integer)
    rule_name: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    metric: Mapped[str | None] = mapped_column(String(200))
    value: Mapped[str | None] = mapped_column(String(40))  # encoded: NaN and infinities too
    epoch: Mapped[int | None] = mapped_column(Integer)
    done: Mapped[list] = mapped_column(JSON)
    fired_at: Mapped[float] = mapped_column(Double)


class WebhookDelivery(Base):
    """One webhook post of one firing: the exact body (and signature) every attempt sends.

    `state` is `pending` until `delivered` or `failed` (attempts exhausted). A worker
    claims a due delivery by setting `lease_until`, so one replica posts it at a time.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_firing", "firing_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    firing_id: Mapped[int] = mapped_column(ForeignKey("rule_firings.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    signature: Mapped[str | None] = mapped_column(String(100))
    idempotency_key: Mapped[str] = mapped_column(String(100), unique=True)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[float] = mapped_column(Double)
    lease_until: Mapped[float | None] = mapped_column(Double)
    delivered_at: Mapped[float | None] = mapped_column(Double)
    created_at: Mapped[float] = mapped_column(Double)


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
