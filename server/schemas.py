"""Request bodies, validated strictly so bad input gets a clear 422 naming the field."""

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from .values import encode_number, parse_number

MAX_EVENTS_PER_BATCH = 5000
MAX_KEYS_PER_EVENT = 1000
NAME_PATTERN = re.compile(r"^[^\x00-\x1f]+$")
KIND_PATTERN = r"^[a-z][a-z0-9_.:-]{0,63}$"

# Integer columns: BIGINT for seqs and steps, INTEGER for epochs.
MAX_BIGINT = 2**63 - 1
MAX_INTEGER = 2**31 - 1
MAX_NESTING = 8
MAX_KEY_LENGTH = 200


def limit_nesting(value, depth=0):
    """Refuse JSON nested deeper than MAX_NESTING levels or with over-long keys."""
    if depth > MAX_NESTING:
        raise ValueError(f"nested deeper than {MAX_NESTING} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if len(key) > MAX_KEY_LENGTH:
                raise ValueError(f"key {key[:40]!r}... is longer than {MAX_KEY_LENGTH} characters")
            limit_nesting(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            limit_nesting(item, depth + 1)
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(limit_nesting)]
MetricValue = Annotated[
    float, BeforeValidator(parse_number), PlainSerializer(encode_number, return_type=Any)
]
MetricKey = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunCreate(Strict):
    uid: Annotated[str, Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] | None = (
        None
    )
    name: Name | None = None
    project: Name = "default"
    config: JsonObject = Field(default_factory=dict)
    tags: list[Annotated[str, Field(max_length=100)]] = Field(default_factory=list, max_length=50)
    host: Annotated[str, Field(max_length=255)] | None = None
    versions: dict[str, Annotated[str, Field(max_length=100)]] = Field(default_factory=dict)


class EventIn(Strict):
    seq: int = Field(ge=1, le=MAX_BIGINT)
    kind: Annotated[str, Field(pattern=KIND_PATTERN)]
    time: float | None = Field(default=None, allow_inf_nan=False)
    epoch: int | None = Field(default=None, ge=0, le=MAX_INTEGER)
    step: int | None = Field(default=None, ge=0, le=MAX_BIGINT)
    metrics: dict[MetricKey, MetricValue] = Field(
        default_factory=dict, max_length=MAX_KEYS_PER_EVENT
    )
    data: JsonObject = Field(default_factory=dict)


class EventBatch(Strict):
    events: list[EventIn] = Field(max_length=MAX_EVENTS_PER_BATCH)


class StopRequest(Strict):
    reason: Annotated[str, Field(max_length=1000)] | None = None


RunStatus = Literal["running", "finished", "stopped", "failed", "lost"]
