"""Hot routes without dependency injection: FastAPI's checks, parsing and errors, by hand.

On a small ingest request FastAPI's machinery (solving each dependency,
validating the path and the body, encoding the answer) costs more than storing
it. The hottest routes take only the `Request` and call these helpers: the
same 401/403/422 answers, pydantic's own JSON parser (NaN tokens accepted),
and an OpenAPI description of their input (`documented_input`).
"""

import functools
import json
import re
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from callboard.server.api.deps import ROW_ID, admit, get_principal

# Bodies up to this size are parsed on the event loop; larger ones on a worker thread,
# so one large request does not hold up everyone else's.
ON_THE_LOOP_BYTES = 64 * 1024
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
VALIDATION_ERROR = {
    "description": "Validation Error",
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
    },
}


async def authorize(request: Request, *scopes):
    """The caller, admitted as `Depends(require(*scopes))` would admit them (401/403/429)."""
    return admit(request, await get_principal(request), scopes)


def row_id(request: Request, name="run_id"):
    """Path parameter `name` as a run's or token's id (`ROW_ID`), else 422."""
    try:
        return ROW_ID.validate_python(request.path_params[name])
    except ValidationError as exc:
        raise _invalid(exc, ("path", name)) from None


async def json_body(request: Request, model):
    """The request body as a `model`, validated straight from JSON, else 422.

    Like FastAPI, a body whose Content-Type is not JSON is not parsed.
    """
    body = await request.body()
    if not body:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    json_sent = is_json(request.headers.get("content-type"))
    validate = functools.partial(validate_json, model) if json_sent else None
    try:
        if validate is None:
            return model.model_validate(body)
        if len(body) > ON_THE_LOOP_BYTES:  # seconds of parsing for MiBs: off the event loop
            return await run_in_threadpool(validate, body)
        return validate(body)
    except ValidationError as exc:
        raise _invalid(exc, ("body",)) from None


def validate_json(model, body):
    """`model.model_validate_json(body)`, which refuses lone surrogate escapes (`"\\ud800"`).

    Such text is read by the standard library instead; the models' text types
    then keep it with U+FFFD in place of each lone surrogate.
    """
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        if exc.errors()[0]["type"] != "json_invalid" or not SURROGATE_ESCAPE.search(body):
            raise
        refused = exc
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        raise refused from None
    return model.model_validate(parsed)


def json_answer(value: Any, status_code=200):
    return Response(orjson.dumps(value), status_code=status_code, media_type="application/json")


def direct_route(router, method, prefix="/api/v1"):
    """`router`'s `method` route as a plain Starlette `Route` under `prefix`, to match first.

    Its endpoint takes only the `Request` (these helpers do FastAPI's part), so
    FastAPI's per-request machinery around it (dependency solving, telemetry
    hooks: about 0.1 ms, a sixth of an epoch post) is skipped; errors go to the
    app's same exception handlers. The APIRoute stays for /openapi.json.

    Example:
        `app.router.routes.insert(0, direct_route(events.router, "POST"))`
    """
    (route,) = (route for route in router.routes if method in route.methods)
    return Route(prefix + route.path, route.endpoint, methods=[method], name=route.name)


def documented_path(path_ids=("run_id",)):
    """`openapi_extra` describing path ids (`ROW_ID`), as FastAPI would."""
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": ROW_ID.json_schema(),
        }
        for name in path_ids
    ]
    return {"parameters": parameters, "responses": {"422": VALIDATION_ERROR}}


def documented_input(model, path_ids=("run_id",)):
    """`openapi_extra` describing path ids and a JSON body of `model`, as FastAPI would."""
    return {
        **documented_path(path_ids),
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline_schema(model)}},
        },
    }


def inline_schema(model):
    """`model`'s JSON schema with its `$defs` written in place (for a non-recursive model)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


def is_json(content_type):
    if not content_type:
        return False
    kind = content_type.partition(";")[0].strip().lower()
    maintype, _, subtype = kind.partition("/")
    return maintype == "application" and (subtype == "json" or subtype.endswith("+json"))


def _invalid(exc, prefix):
    """A 422 naming where `exc` failed; a raw body is not echoed back (it may be any bytes)."""
    errors = []
    for error in exc.errors(include_url=False):
        error = {**error, "loc": (*prefix, *error["loc"])}
        if isinstance(error.get("input"), bytes):
            error["input"] = None
        errors.append(error)
    return RequestValidationError(errors)
