"""The server's answers that `ServerApi` reads, as typed records.

Each record mirrors the answer model of the same name in the server's
`/openapi.json` (tests/cli/test_answers.py holds them together), so an older
client keeps working with a newer server: a field the server adds later is
ignored, and one the server may send as null may also be missing (it reads as
None). Any other missing field, or a value of the wrong JSON type, raises
`UnexpectedAnswer` at once rather than deep inside a caller (a `stop_requested`
of "false" never reads as a stop).
"""

import dataclasses
import types
import typing
from dataclasses import dataclass

from ._errors import UnexpectedAnswer

record = dataclass(frozen=True, kw_only=True)


class Answer:
    """A record read from a JSON answer: `Record.from_answer(response.json())`."""

    @classmethod
    def from_answer(cls, answer):
        """The record in the JSON object `answer`, its extra keys ignored."""
        if not isinstance(answer, dict):
            raise UnexpectedAnswer(
                f"expected a JSON object for {cls.__name__}, got {answer!r:.200}"
            )
        fields = dataclasses.fields(cls)
        missing = [
            field.name
            for field in fields
            if field.name not in answer and field.default is dataclasses.MISSING
        ]
        if missing:
            raise UnexpectedAnswer(f"{cls.__name__} without {', '.join(missing)}")
        return cls(
            **{
                field.name: _read(answer[field.name], field.type, f"{cls.__name__}.{field.name}")
                for field in fields
                if field.name in answer
            }
        )


def _read(value, kind, where):
    """`value` if it is of the type `kind` (records inside it read too); else UnexpectedAnswer."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):  # `X | None`
        if value is None and type(None) in args:
            return None
        (kind,) = [arg for arg in args if arg is not type(None)]
        return _read(value, kind, where)
    if isinstance(kind, type) and issubclass(kind, Answer):
        return kind.from_answer(value)
    if origin is list and isinstance(value, list):
        return [_read(item, args[0], where) for item in value]
    if _is_a(value, origin or kind):
        return value
    raise UnexpectedAnswer(f"{where} is {value!r:.80}, not {getattr(kind, '__name__', kind)}")


def _is_a(value, kind):
    if isinstance(value, bool):  # JSON true is no number
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


@record
class RunSummary(Answer):
    """A run as `GET /api/v1/runs` lists it (`GET /api/v1/runs/{id}` sends its `RunDetail`)."""

    id: int
    uid: str
    name: str
    project: str
    status: str  # running, finished, stopped, failed or lost
    ended: bool  # the status is final
    source: str
    tags: list[str]
    host: str | None = None
    epochs_done: int
    epochs: int | None = None  # planned, when the client said
    last: dict  # {metric: its last value}
    main_metric: str | None = None
    created_at: float
    updated_at: float
    ended_at: float | None = None
    stop: str  # none, requested, acknowledged or stopped
    note: str | None = None  # the user's note (Markdown)
    archived: bool = False  # hidden from the runs list (False from a server before archiving)


@record
class ControlState(Answer):
    """A run's control state: what a training polls, and what a stop request answers."""

    run_id: int
    status: str
    stop_requested: bool
    state: str
    reason: str | None = None
    requested_at: float | None = None
    acknowledged_at: float | None = None
    stopped_at: float | None = None


@record
class RunDetail(RunSummary):
    """A run with all the server keeps of it: `POST /api/v1/runs` and `GET /api/v1/runs/{id}`."""

    config: dict
    versions: dict
    params: dict
    metrics: list[str]
    last_epoch: int | None = None
    last_step: int | None = None
    error: str | None = None
    control: ControlState
    note_html: str | None = None  # the note as HTML, raw HTML in it escaped


@record
class RunsPage(Answer):
    """One page of `GET /api/v1/runs`: its runs and how many match in all."""

    runs: list[RunSummary]
    total: int
    limit: int
    offset: int


@record
class IngestResult(Answer):
    """What one request of events did: stored, skipped as stored already, the run's status."""

    accepted: int
    duplicates: int
    status: str


@record
class Heartbeat(Answer):
    """The run's status after a heartbeat (a `lost` run is `running` again)."""

    status: str


@record
class Token(Answer):
    """An API token as `GET /api/v1/tokens` lists it (never its secret)."""

    id: int
    name: str
    role: str
    project: str | None = None
    prefix: str
    created_at: float
    revoked_at: float | None = None


@record
class TokenList(Answer):
    """`GET /api/v1/tokens`: the tokens the caller may manage."""

    tokens: list[Token]


@record
class CommandRecord(Answer):
    """A command sent to a run (`stop`, `pause`, `set_learning_rate`...) and where it stands.

    Mirrors the server's `Command`: `state` is requested, delivered, applied,
    refused (`detail` says why) or cancelled; `epoch` / `step` where it took effect.
    """

    id: int
    run_id: int
    kind: str
    value: float | None = None
    reason: str | None = None
    state: str
    detail: str | None = None
    requested_by: str | None = None
    requested_at: float
    delivered_at: float | None = None
    settled_at: float | None = None
    epoch: int | None = None
    step: int | None = None


@record
class CommandList(Answer):
    """`GET .../commands` and `GET .../commands/pending`: a run's commands, oldest first."""

    commands: list[CommandRecord]


@record
class Rule(Answer):
    """A rule as `POST` / `GET /api/v1/rules` answer it: a webhook's URL cut, its secret never.

    `condition` is the rule's condition as sent; `actions` as shown
    (`{"kind": "webhook", "url": "https://hooks.example.org/…", "has_secret": true}`,
    `{"kind": "command", "command": "stop", "value": null, "factor": null}`).
    """

    id: int
    name: str
    project: str | None = None  # None: every project
    condition: dict
    actions: list[dict]
    created_by: str | None = None
    created_at: float
    firings: int


@record
class RuleList(Answer):
    """`GET /api/v1/rules`: the rules the caller's token sees, oldest first."""

    rules: list[Rule]


def error_detail(response):
    """The server's `detail` of an error answer as one line; None when it sent none
    (e.g. a proxy's or another web server's HTML page)."""
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return None
    if isinstance(detail, list):  # a 422's field errors
        detail = "; ".join(
            f"{'.'.join(map(str, error.get('loc', ())))}: {error.get('msg')}"
            if isinstance(error, dict)
            else str(error)
            for error in detail
        )
    return " ".join(str(detail).split())


def retry_after(response):
    """The seconds an error answer asks to wait (`Retry-After`), or None."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None
