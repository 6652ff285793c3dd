"""The answers of the rules routes (`routes/rules.py`), as pydantic models.

Webhook URLs are answered cut to `scheme://host[:port]/…` and secrets never:
a URL's path often is the secret (Slack's incoming webhooks).

Example:
    `@router.get("/rules", response_model=RuleList)`
"""

from typing import Any, Literal

from pydantic import BaseModel, Field

from callboard.server.api.answers import Number, UnixTime
from callboard.server.commands import KINDS
from callboard.server.rules.deliveries import cut_url
from callboard.server.rules.firing import run_page


class WebhookShown(BaseModel):
    kind: Literal["webhook"]
    url: str = Field(description="cut to scheme://host[:port]/…: the full URL is never answered")
    has_secret: bool = Field(description="its posts are signed (X-Callboard-Signature)")


class CommandShown(BaseModel):
    kind: Literal["command"]
    command: Literal[KINDS]
    value: float | None
    factor: float | None


class Rule(BaseModel):
    """A rule: when `condition` holds on a run of `project` (none: any project), do `actions`."""

    id: int
    name: str
    project: str | None
    condition: dict[str, Any]
    actions: list[WebhookShown | CommandShown]
    created_by: str | None
    created_at: UnixTime
    firings: int = Field(description="how many times it fired")


class RuleList(BaseModel):
    rules: list[Rule]


class AlertRun(BaseModel):
    id: int
    name: str
    project: str
    url: str = Field(description="the run's page")


class Alert(BaseModel):
    """A rule fired on a run (once per run and condition episode), and what it did."""

    id: int
    rule_id: int
    rule_name: str
    run: AlertRun
    episode: int
    message: str
    metric: str | None
    value: Number | None
    epoch: int | None
    done: list[str] = Field(description="what each action did")
    fired_at: UnixTime


class AlertList(BaseModel):
    alerts: list[Alert]


class Delivery(BaseModel):
    """One webhook post of one firing, and how its attempts went."""

    id: int
    firing_id: int
    run_id: int
    url: str = Field(description="cut to scheme://host[:port]/…")
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: UnixTime
    delivered_at: UnixTime | None
    created_at: UnixTime


class DeliveryList(BaseModel):
    deliveries: list[Delivery]


def shown_action(action):
    """A stored action as answered: a webhook's URL cut, its secret left out."""
    if action["kind"] == "webhook":
        return WebhookShown(
            kind="webhook", url=cut_url(action["url"]), has_secret=bool(action.get("secret"))
        )
    return CommandShown(
        kind="command",
        command=action["command"],
        value=action.get("value"),
        factor=action.get("factor"),
    )


def rule_answer(row, firings=0):
    """A `rules` row (with its firings' count) as its `Rule` answer."""
    return Rule(
        id=row.id,
        name=row.name,
        project=row.project,
        condition=row.condition,
        actions=[shown_action(action) for action in row.actions],
        created_by=row.created_by,
        created_at=row.created_at,
        firings=firings,
    )


def alert_answer(row):
    """A firing joined to its run (`run_name`, `project`) and rule (`base_url`) as an `Alert`."""
    return Alert(
        id=row.id,
        rule_id=row.rule_id,
        rule_name=row.rule_name,
        run=AlertRun(
            id=row.run_id,
            name=row.run_name,
            project=row.project,
            url=run_page(row.base_url, row.run_id),
        ),
        episode=row.episode,
        message=row.message,
        metric=row.metric,
        value=None if row.value is None else float(row.value),  # float() reads "NaN" too
        epoch=row.epoch,
        done=row.done,
        fired_at=row.fired_at,
    )
