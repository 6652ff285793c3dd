"""The server's answers that `ServerApi` reads, as typed records.

Each record mirrors the answer model of the same name in the server's
`/openapi.json` (tests/cli/test_answers.py holds them together). A field the
server adds later is ignored; one it no longer sends raises `UnexpectedAnswer`
at once rather than deep inside a caller.
"""

import dataclasses
from dataclasses import dataclass


class UnexpectedAnswer(ValueError):
    """The server answered with JSON of another shape than this client knows."""


class Answer:
    """A record read from a JSON answer: `Record.from_answer(response.json())`."""

    @classmethod
    def from_answer(cls, answer):
        """The record in the JSON object `answer`, its extra keys ignored."""
        if not isinstance(answer, dict):
            raise UnexpectedAnswer(
                f"expected a JSON object for {cls.__name__}, got {answer!r:.200}"
            )
        names = [field.name for field in dataclasses.fields(cls)]
        missing = [name for name in names if name not in answer]
        if missing:
            raise UnexpectedAnswer(f"{cls.__name__} without {', '.join(missing)}")
        return cls(**{name: answer[name] for name in names})


@dataclass(frozen=True)
class RunSummary(Answer):
    """A run as `GET /api/v1/runs` lists it (`GET /api/v1/runs/{id}` sends more)."""

    id: int
    uid: str
    name: str
    project: str
    status: str  # running, finished, stopped, failed or lost
    ended: bool  # the status is final
    source: str
    tags: list[str]
    host: str | None
    epochs_done: int
    epochs: int | None  # planned, when the client said
    last: dict  # {metric: its last value}
    main_metric: str | None
    created_at: float
    updated_at: float
    ended_at: float | None
    stop: str  # none, requested, acknowledged or stopped


@dataclass(frozen=True)
class RunsPage(Answer):
    """One page of `GET /api/v1/runs`: its runs and how many match in all."""

    runs: list[RunSummary]
    total: int
    limit: int
    offset: int

    @classmethod
    def from_answer(cls, answer):
        page = super().from_answer(answer)
        return dataclasses.replace(page, runs=[RunSummary.from_answer(r) for r in page.runs])


@dataclass(frozen=True)
class ControlState(Answer):
    """A run's control state: what a stop request and `GET .../control` answer."""

    run_id: int
    status: str
    stop_requested: bool
    state: str
    reason: str | None
    requested_at: float | None
    acknowledged_at: float | None
    stopped_at: float | None


@dataclass(frozen=True)
class Token(Answer):
    """An API token as `GET /api/v1/tokens` lists it (never its secret)."""

    id: int
    name: str
    role: str
    project: str | None
    prefix: str
    created_at: float
    revoked_at: float | None


@dataclass(frozen=True)
class TokenList(Answer):
    """`GET /api/v1/tokens`: the tokens the caller may manage."""

    tokens: list[Token]

    @classmethod
    def from_answer(cls, answer):
        listed = super().from_answer(answer)
        return dataclasses.replace(listed, tokens=[Token.from_answer(t) for t in listed.tokens])
