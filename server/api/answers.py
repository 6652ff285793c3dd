"""Every answer the REST API gives, as a pydantic model, and the functions that build them.

The models are the contract `/openapi.json` publishes: each route names its
answer (`response_model=`, or `responses=` on the hand-served hot routes), and
the Python client and the test fakes follow these shapes. Non-finite numbers
travel as the strings "NaN", "Infinity", "-Infinity" (`Number`).

Example:
    `@router.get("/runs/{run_id}", response_model=RunDetail, responses=problems(401, 404))`
"""

import math
from typing import Annotated, Any, Literal

from fastapi.responses import Response
from pydantic import BaseModel, BeforeValidator, Field
from sqlalchemy.orm import defer

from callboard.server.api.notes import note_html
from callboard.server.api.schemas import RunStatus
from callboard.server.auth import ROLES
from callboard.server.control import control_state
from callboard.server.metric_keys import main_metric
from callboard.server.store.ingest import point_step
from callboard.server.store.models import ENDED_STATUSES, Run
from callboard.server.store.series import x_axis
from callboard.server.store.storable import encode_number

# What `run_summary` never reads, left in the database when listing runs: a run's
# config may be megabytes, and a list of 1,000 runs must not load them all.
SUMMARY_ONLY = (defer(Run.config), defer(Run.versions))


def _named_if_non_finite(value):
    """A float NaN or infinity as its name, as answers carry it; anything else as it is."""
    if isinstance(value, float) and not math.isfinite(value):
        return encode_number(value)
    return value


NonFinite = Literal["NaN", "Infinity", "-Infinity"]
Number = Annotated[float | NonFinite, BeforeValidator(_named_if_non_finite)]
"""A metric value: a JSON number, or "NaN" / "Infinity" / "-Infinity"."""
StopState = Literal["none", "requested", "acknowledged", "stopped"]
UnixTime = Annotated[float, Field(description="Unix seconds")]
JsonObject = dict[str, Any]


class Problem(BaseModel):
    """An error answer: `detail` says what is wrong (a list of field errors for a bad request)."""

    detail: str | list[Any]


PROBLEMS = {
    400: "a header this server refuses (Host, Last-Event-ID)",
    401: "no token, or an unknown or revoked one",
    403: "the token's role or project does not allow this (or a cookie write lacks X-CSRF-Token)",
    404: "no such run (or token), or not in the caller's project",
    409: "the request conflicts with what is stored (an ended run, a name or uid taken)",
    413: "the request is over this server's size limits",
    422: "a body this route cannot read: `detail` says why",
    429: "too many requests for this token: retry after `Retry-After` seconds",
    503: "the database is busy or unreachable, or live streams are all taken: retry shortly",
}


def problems(*codes):
    """`responses=` documenting the error answers `codes` a route can give, as `Problem`s."""
    return {code: {"model": Problem, "description": PROBLEMS[code]} for code in codes}


def json_problems(*codes):
    """`problems(*codes)` for a route answering CSV or a stream: its errors are JSON still.

    (FastAPI writes a `model` under the route's own media type.)
    """
    schema = {"$ref": f"#/components/schemas/{Problem.__name__}"}
    return {
        code: {"description": PROBLEMS[code], "content": {"application/json": {"schema": schema}}}
        for code in codes
    }


class CsvResponse(Response):
    """A CSV answer (`response_class=`: documents `text/csv` as a string)."""

    media_type = "text/csv"


class EventStreamResponse(Response):
    """`response_class=` of a route answering a live stream: documents `text/event-stream`.

    (FastAPI's `EventSourceResponse` would also change how the route runs.)
    """

    media_type = "text/event-stream"


# --- runs ------------------------------------------------------------------------------------


class ControlState(BaseModel):
    """What a training client polls: whether a stop was requested, and where the stop is."""

    run_id: int
    status: RunStatus
    stop_requested: bool
    state: StopState
    reason: str | None
    requested_at: UnixTime | None
    acknowledged_at: UnixTime | None
    stopped_at: UnixTime | None


class RunSummary(BaseModel):
    """A run as the runs list (and the live runs stream) shows it."""

    id: int
    uid: str
    name: str
    project: str
    status: RunStatus
    ended: bool = Field(description="the status is final (finished, stopped or failed)")
    source: str
    tags: list[str]
    host: str | None
    epochs_done: int
    epochs: int | None = Field(description="epochs planned, when the client said")
    last: dict[str, Number] = Field(description="each metric's last value")
    main_metric: str | None = Field(description="the metric the run is judged by")
    created_at: UnixTime
    updated_at: UnixTime
    ended_at: UnixTime | None
    stop: StopState
    note: str | None = Field(description="the user's note on the run (Markdown)")
    archived: bool = Field(description="hidden from the runs list unless asked for")


class RunDetail(RunSummary):
    """A run with everything the run page needs."""

    note_html: str | None = Field(description="the note as HTML (raw HTML in it escaped)")
    config: JsonObject
    versions: JsonObject
    params: JsonObject
    metrics: list[str]
    last_epoch: int | None
    last_step: int | None
    error: str | None
    control: ControlState


class RunsPage(BaseModel):
    """One page of the runs list, and how many runs match in all."""

    runs: list[RunSummary]
    total: int
    limit: int
    offset: int


class Heartbeat(BaseModel):
    """The run's status after a heartbeat (a `lost` run is `running` again)."""

    status: RunStatus


def last_values(run):
    """`{metric: last value}` from the run's summary."""
    return {key: value for key, (_step, value) in sorted((run.summary or {}).items())}


def _planned_epochs(run):
    epochs = (run.params or {}).get("epochs")
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None


def _summary_fields(run):
    return {
        "id": run.id,
        "uid": run.uid,
        "name": run.name,
        "project": run.project.name,
        "status": run.status,
        "ended": run.status in ENDED_STATUSES,
        "source": run.source,
        "tags": run.tags or [],
        "host": run.host,
        "epochs_done": run.epochs_done,
        "epochs": _planned_epochs(run),
        "last": last_values(run),
        "main_metric": main_metric((run.summary or {}).keys()),
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "ended_at": run.ended_at,
        "stop": control_state(run)["state"],
        "note": run.note,
        "archived": run.archived_at is not None,
    }


def run_summary(run):
    """A run as the runs list shows it (`RunSummary`)."""
    return RunSummary(**_summary_fields(run))


def run_detail(run):
    """A run with everything the run page needs (`RunDetail`)."""
    return RunDetail(
        **_summary_fields(run),
        config=run.config or {},
        versions=run.versions or {},
        params=run.params or {},
        metrics=sorted((run.summary or {}).keys()),
        last_epoch=run.last_epoch,
        last_step=run.last_step,
        error=run.error,
        control=control_state(run),
        note_html=note_html(run.note),
    )


# --- events and metrics ----------------------------------------------------------------------


XAxis = Literal["epoch", "step"]


class RunEvent(BaseModel):
    """One stored event of a run (also each `message` of the run's live stream)."""

    id: int
    seq: int | None = Field(description="the client's sequence number; none for server events")
    kind: str
    epoch: int | None
    step: int | None
    x: int | None = Field(description="where its metrics sit on a chart's x axis")
    x_axis: XAxis = Field(description="what `x` counts")
    time: UnixTime
    received_at: UnixTime
    metrics: dict[str, Number]
    data: JsonObject


class EventsPage(BaseModel):
    events: list[RunEvent]


class IngestResult(BaseModel):
    """What a batch of events did: stored, skipped as already stored, and the run's status."""

    accepted: int
    duplicates: int
    status: RunStatus


def event_view(event):
    """One stored event (`RunEvent`)."""
    return RunEvent(
        id=event.id,
        seq=event.seq,
        kind=event.kind,
        epoch=event.epoch,
        step=event.step,
        x=point_step(event),
        x_axis=x_axis(event.kind, event.epoch),
        time=event.time,
        received_at=event.received_at,
        metrics=event.metrics or {},
        data=event.data or {},
    )


class MetricKeys(BaseModel):
    keys: list[str]


class Point(BaseModel):
    step: int
    epoch: int | None
    value: Number
    time: UnixTime


class MetricSeries(BaseModel):
    """One metric's points by step; `downsampled` when fewer than `total` points are sent."""

    key: str
    points: list[Point]
    total: int
    downsampled: bool
    x_axis: XAxis = Field(description="what the points' steps count")


class Extreme(BaseModel):
    """A metric's lowest and highest value (null when every value is NaN), and its last."""

    min: Number | None
    max: Number | None
    last: Number


class Extremes(BaseModel):
    runs: dict[str, dict[str, Extreme]] = Field(description="{run id: {metric: extremes}}")


class Sparkline(BaseModel):
    key: str | None = Field(description="the run's main metric, none before it has any")
    values: list[Number]


class Sparklines(BaseModel):
    sparklines: dict[str, Sparkline] = Field(description="{run id: sparkline}")


# --- Keras compatibility, tokens, health ------------------------------------------------------


class EpochPublished(BaseModel):
    """Where a stock `keras.callbacks.RemoteMonitor` epoch went, and the metrics refused."""

    run_id: int
    epoch: int
    dropped: list[str] = Field(description="metric names that could not be stored")


class Token(BaseModel):
    id: int
    name: str
    role: Literal[ROLES]
    project: str | None
    prefix: str
    created_at: UnixTime
    revoked_at: UnixTime | None


class NewToken(Token):
    token: str = Field(description="the secret: shown this once, never again")


class TokenList(BaseModel):
    tokens: list[Token]


class Health(BaseModel):
    status: Literal["ok"]
    database: str = Field(description="the database's dialect: sqlite or postgresql")


# --- live streams ----------------------------------------------------------------------------


def event_stream(**payloads):
    """`responses=` for a server-sent events answer whose messages carry `payloads`.

    `payloads` maps each SSE event name (`message` for unnamed ones) to the
    model of its JSON `data`, written as OpenAPI 3.2's `itemSchema`, as
    FastAPI writes its own event streams.
    """
    data = [
        {
            "properties": {
                "event": {"const": name},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"$ref": f"#/components/schemas/{model.__name__}"},
                },
            }
        }
        for name, model in payloads.items()
    ]
    item = {
        "type": "object",
        "properties": {
            "data": {"type": "string"},
            "event": {"type": "string"},
            "id": {"type": "string"},
            "retry": {"type": "integer", "minimum": 0},
        },
        "anyOf": data,
    }
    return {
        200: {
            "description": "server-sent events: "
            + ", ".join(f"`{name}` carries a {model.__name__}" for name, model in payloads.items()),
            "content": {"text/event-stream": {"schema": {"type": "string"}, "itemSchema": item}},
        }
    }
