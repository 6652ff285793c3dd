"""The server's answers that `ServerApi` reads, as typed records (the shapes of `/openapi.json`).

Each record names the fields the client uses; a field the server adds later is
ignored, and a field it no longer sends raises `UnexpectedAnswer` at once
rather than deep inside a caller.
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
    name: str
    project: str
    status: str
    epochs_done: int
    last: dict
    created_at: float
    updated_at: float
    stop: str


@dataclass(frozen=True)
class RunPage(Answer):
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


@dataclass(frozen=True)
class TokenInfo(Answer):
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

    tokens: list[TokenInfo]

    @classmethod
    def from_answer(cls, answer):
        listed = super().from_answer(answer)
        return cls(tokens=[TokenInfo.from_answer(token) for token in listed.tokens])
