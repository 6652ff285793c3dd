"""Request bodies, validated strictly so bad input gets a clear 422 naming the field."""

import re
from typing import Annotated, Any, Literal

from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from callboard.server.commands import KINDS, OUTCOMES, value_problem
from callboard.server.store.models import RUN_STATUSES
from callboard.server.store.storable import (
    encode_number,
    json_safe,
    parse_number,
    storable_text,
    valid_unicode,
)

MAX_EVENTS_PER_BATCH = 5000
MAX_KEYS_PER_EVENT = 1000
PRINTABLE = r"[^\x00-\x1f]"  # names and metric keys hold no control character
NAME_PATTERN = re.compile(f"^{PRINTABLE}+$")
KIND_PATTERN = r"^[a-z][a-z0-9_.:-]{0,63}$"

# Integer columns: BIGINT for seqs and steps, INTEGER for epochs.
MAX_BIGINT = 2**63 - 1
MAX_INTEGER = 2**31 - 1
# Ids of runs and tokens: INTEGER columns on PostgreSQL (events' and points' ids are BIGINT).
MAX_ROW_ID = MAX_INTEGER
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


def storable_json(value):
    """`limit_nesting`, then `json_safe`: JSON that any database stores and answers carry."""
    return json_safe(limit_nesting(value))


def valid_unicode_keys(value):
    """A dict's keys through `valid_unicode` (checked at C speed: keys are many, mostly ASCII)."""
    if not isinstance(value, dict):
        return value
    try:
        if all(map(str.isascii, value)):
            return value
    except TypeError:  # a key that is not text: pydantic refuses it by name
        return value
    return {valid_unicode(key): item for key, item in value.items()}


# Where text enters: names and metric keys refuse control characters (NUL included);
# free text keeps them but NUL. Lone surrogates become U+FFFD everywhere (`values`).
JsonObject = Annotated[dict[str, Any], AfterValidator(storable_json)]
Text = Annotated[str, BeforeValidator(storable_text)]
MetricValue = Annotated[
    float, BeforeValidator(parse_number), PlainSerializer(encode_number, return_type=Any)
]
MetricKey = Annotated[
    str, Field(min_length=1, max_length=MAX_KEY_LENGTH, pattern=NAME_PATTERN.pattern)
]
Metrics = Annotated[
    dict[MetricKey, MetricValue],
    BeforeValidator(valid_unicode_keys),
    Field(max_length=MAX_KEYS_PER_EVENT),
]
Name = Annotated[
    str,
    BeforeValidator(valid_unicode),
    Field(min_length=1, max_length=200, pattern=NAME_PATTERN.pattern),
]
NamePart = Annotated[
    str, BeforeValidator(valid_unicode), Field(max_length=200, pattern=f"^{PRINTABLE}*$")
]
METRIC_KEY = TypeAdapter(MetricKey)


def keep_valid_metrics(metrics):
    """Split `{key: value}` into the metrics an event may hold and the keys it may not.

    Returns `(kept, dropped)`: lone surrogates in keys become U+FFFD; keys
    `MetricKey` refuses, and those past `MAX_KEYS_PER_EVENT`, are dropped.
    """
    kept, dropped = {}, []
    for key, value in valid_unicode_keys(metrics).items():
        try:
            METRIC_KEY.validate_python(key)
        except ValidationError:
            dropped.append(key)
            continue
        if len(kept) < MAX_KEYS_PER_EVENT:
            kept[key] = value
        else:
            dropped.append(key)
    return kept, dropped


async def validation_error_answer(request, exc):
    """FastAPI's 422 `{"detail": [errors]}`, with echoed inputs made strict JSON.

    An input may hold infinity (`1e999`), a lone surrogate or bytes, which
    the default answer fails to encode (a 500).
    """
    errors = jsonable_encoder(
        exc.errors(), custom_encoder={bytes: lambda raw: raw.decode("utf-8", "replace")}
    )
    return JSONResponse({"detail": json_safe(errors)}, status_code=422)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


MAX_NOTE_LENGTH = 20_000
Tags = Annotated[list[Annotated[Text, Field(max_length=100)]], Field(max_length=50)]


class RunCreate(Strict):
    uid: Annotated[str, Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] | None = (
        None
    )
    name: Name | None = None
    project: Name = "default"
    config: JsonObject = Field(default_factory=dict)
    tags: Tags = Field(default_factory=list)
    host: Annotated[Text, Field(max_length=255)] | None = None
    versions: dict[Text, Annotated[Text, Field(max_length=100)]] = Field(default_factory=dict)


class RunPatch(Strict):
    """What `PATCH /api/v1/runs/{id}` changes: each field sent, only those (none is null
    but `note`).

    `tags` replaces the run's tags; `note` is Markdown (empty or null: no note);
    `archived` hides the run from the default runs list (false restores it).
    """

    name: Name = None
    tags: Tags = None
    note: Annotated[Text, Field(max_length=MAX_NOTE_LENGTH)] | None = None
    archived: Annotated[bool, Field(strict=True)] = None


class EventIn(Strict):
    seq: int = Field(ge=1, le=MAX_BIGINT)
    kind: Annotated[str, Field(pattern=KIND_PATTERN)]
    time: float | None = Field(default=None, allow_inf_nan=False)
    epoch: int | None = Field(default=None, ge=0, le=MAX_INTEGER)
    step: int | None = Field(default=None, ge=0, le=MAX_BIGINT)
    metrics: Metrics = Field(default_factory=dict)
    data: JsonObject = Field(default_factory=dict)


class EventBatch(Strict):
    events: list[EventIn] = Field(max_length=MAX_EVENTS_PER_BATCH)


class StopRequest(Strict):
    reason: Annotated[Text, Field(max_length=1000)] | None = None


CommandKind = Literal[KINDS]
MAX_COMMAND_DETAIL = 4000


class CommandIn(Strict):
    """A command to a run's training: `value` only for `set_learning_rate` (finite, > 0)."""

    kind: CommandKind
    value: Annotated[float, Field(strict=True, allow_inf_nan=False)] | None = Field(
        default=None, validate_default=True
    )
    reason: Annotated[Text, Field(max_length=1000)] | None = None

    @field_validator("value")
    @classmethod
    def _fits_the_kind(cls, value, info: ValidationInfo):
        kind = info.data.get("kind")  # absent when the kind is wrong: its own error says so
        problem = None if kind is None else value_problem(kind, value)
        if problem:
            raise ValueError(problem)
        return value


def _cut_detail(text):
    """A long detail (an exception's repr, say) is kept, cut to `MAX_COMMAND_DETAIL`."""
    if text is None or len(text) <= MAX_COMMAND_DETAIL:
        return text
    return text[: MAX_COMMAND_DETAIL - 1] + "…"


class OutcomeIn(Strict):
    """What the training did with a command, and where (epoch, step) it took effect."""

    state: Literal[OUTCOMES]
    detail: Annotated[Text | None, AfterValidator(_cut_detail)] = None
    epoch: int | None = Field(default=None, ge=0, le=MAX_INTEGER)
    step: int | None = Field(default=None, ge=0, le=MAX_BIGINT)


RunStatus = Literal[RUN_STATUSES]
