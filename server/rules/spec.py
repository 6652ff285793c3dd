"""What a rule is: its condition and its actions, validated strictly (a clear 422 names the field).

The one description of a rule: the API validates bodies with `RuleIn`, the store
keeps its JSON, and the engine reads it back through `RULE_PARTS`.

Example:
    >>> rule = RuleIn.model_validate({
    ...     "name": "nan loss",
    ...     "condition": {"kind": "nan", "metric": "loss"},
    ...     "actions": [{"kind": "command", "command": "stop"}],
    ... })
    >>> rule.condition.kind, rule.actions[0].command
    ('nan', 'stop')
"""

from typing import Annotated, Literal

from pydantic import AnyHttpUrl, Field, TypeAdapter, field_validator, model_validator

from callboard.server.api.schemas import MetricKey, Name, Strict
from callboard.server.commands import KINDS

# The run statuses a `status` rule may watch: those a run ends with, and `lost`.
WATCHED_STATUSES = ("failed", "lost", "finished", "stopped")
MAX_ACTIONS = 10
Finite = Annotated[float, Field(strict=False, allow_inf_nan=False)]


class NanCondition(Strict):
    """`metric` becomes NaN or infinite."""

    kind: Literal["nan"]
    metric: MetricKey


class ThresholdCondition(Strict):
    """`metric` goes above (or below) `value`."""

    kind: Literal["above", "below"]
    metric: MetricKey
    value: Finite


class PlateauCondition(Strict):
    """No improvement of `metric` by more than `min_delta` for `patience` epochs (as Keras'
    EarlyStopping judges it): `mode` `min` wants it lower, `max` higher."""

    kind: Literal["plateau"]
    metric: MetricKey
    patience: int = Field(ge=1, le=100_000)
    min_delta: Finite = Field(default=0.0, ge=0)
    mode: Literal["min", "max"] = "min"


class WorseThanMedianCondition(Strict):
    """From epoch `warmup` on, `metric` is worse than the median of the project's other runs at
    the same epoch (Optuna's MedianPruner, across machines), once `min_runs` others got there."""

    kind: Literal["worse_than_median"]
    metric: MetricKey
    warmup: int = Field(default=0, ge=0, le=1_000_000)
    mode: Literal["min", "max"] = "min"
    min_runs: int = Field(default=3, ge=1, le=10_000)


class StatusCondition(Strict):
    """The run's status becomes `status`."""

    kind: Literal["status"]
    status: Literal[WATCHED_STATUSES]


class SilentCondition(Strict):
    """A live run sent no event for `seconds` (its process died, hung, or lost the network)."""

    kind: Literal["silent"]
    seconds: Finite = Field(ge=1, le=30 * 86400)


Condition = Annotated[
    NanCondition
    | ThresholdCondition
    | PlateauCondition
    | WorseThanMedianCondition
    | StatusCondition
    | SilentCondition,
    Field(discriminator="kind"),
]
METRIC_CONDITIONS = frozenset({"nan", "above", "below", "plateau", "worse_than_median"})


class WebhookAction(Strict):
    """POST the alert as JSON to `url`; with `secret`, signed (`X-Callboard-Signature`)."""

    kind: Literal["webhook"]
    url: Annotated[AnyHttpUrl, Field(max_length=1000)]
    secret: Annotated[str, Field(min_length=1, max_length=200)] | None = None

    @field_validator("url")
    @classmethod
    def _no_credentials(cls, url):
        if url.username or url.password:
            raise ValueError("a webhook URL may not hold a user name or password")
        return url


class CommandAction(Strict):
    """Send the run's training a command; `set_learning_rate` takes a `value`, or a `factor`
    of the run's latest learning rate."""

    kind: Literal["command"]
    command: Literal[KINDS]
    value: Finite | None = Field(default=None, gt=0)
    factor: Finite | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _fits_the_command(self):
        if self.command != "set_learning_rate":
            if self.value is not None or self.factor is not None:
                raise ValueError(f"a {self.command!r} command takes no value or factor")
        elif (self.value is None) == (self.factor is None):
            raise ValueError("set_learning_rate needs a value or a factor (one of them)")
        return self


Action = Annotated[WebhookAction | CommandAction, Field(discriminator="kind")]


class RuleIn(Strict):
    """A rule: on every run of `project` (none: every project), when `condition` holds, do
    `actions`."""

    name: Name
    project: Name | None = None
    condition: Condition
    actions: list[Action] = Field(min_length=1, max_length=MAX_ACTIONS)


RULE_PARTS = TypeAdapter(tuple[Condition, list[Action]])


def stored_parts(condition, actions):
    """A stored rule's JSON `condition` and `actions` as their models.

    Example:
        >>> condition, actions = stored_parts({"kind": "silent", "seconds": 60}, [])
        >>> condition.seconds
        60.0
    """
    return RULE_PARTS.validate_python((condition, actions))
