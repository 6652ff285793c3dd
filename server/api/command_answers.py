"""The answers of the commands routes (`routes/commands.py`), as pydantic models.

Example:
    `@router.get("/runs/{run_id}/commands", response_model=CommandList)`
"""

from typing import Literal

from pydantic import BaseModel, Field

from callboard.server.api.answers import UnixTime
from callboard.server.commands import KINDS, STATES

CommandState = Literal[STATES]


class Command(BaseModel):
    """A remote command to a run's training, and where it is in its lifecycle."""

    id: int
    run_id: int
    kind: Literal[KINDS]
    value: float | None = Field(description="set_learning_rate's new rate; none for other kinds")
    reason: str | None
    state: CommandState
    detail: str | None = Field(description="what the training said applying or refusing it")
    requested_by: str | None = Field(description="the token (or dashboard session) that issued it")
    requested_at: UnixTime
    delivered_at: UnixTime | None
    settled_at: UnixTime | None = Field(description="when it was applied, refused or cancelled")
    epoch: int | None = Field(description="the epoch where it took effect, as the client said")
    step: int | None = Field(description="the step where it took effect, as the client said")


class CommandList(BaseModel):
    """A run's commands, oldest first."""

    commands: list[Command]


def command_answer(row):
    """A stored command (a row of the `commands` table) as its `Command` answer."""
    return Command(**row._mapping)


def command_list(rows):
    return CommandList(commands=[command_answer(row) for row in rows])
