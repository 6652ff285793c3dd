"""Schema-driven fuzzing of the REST API against a real server: no 5xx, answers match the schema.

Every operation documents its answers (`server/api/answers.py`), so
`response_schema_conformance` checks real schemas; the cases are derandomized,
the same on every run.
"""

import datetime

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from callboard.server.main import create_app
from tests.server_process import ServerProcess

SCHEMA = schemathesis.openapi.from_dict(create_app().openapi())
# Streams never end; they are tested in test_stream.py. The long-poll for commands waits up to
# 30 s, past the fuzzer's timeout; it is tested in test_commands_channel.py.
UNFUZZED = ("stream", "/commands/pending")
OPERATIONS = [
    result.ok() for result in SCHEMA.get_all_operations() if not result.ok().path.endswith(UNFUZZED)
]
# Valid requests get answers that match the schema; invalid ones never a 5xx.
CHECKS = {
    GenerationMode.POSITIVE: [
        not_a_server_error,
        response_schema_conformance,
        content_type_conformance,
    ],
    GenerationMode.NEGATIVE: [not_a_server_error],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = ServerProcess(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}").start()
    run = httpx.post(f"{server.root}/api/v1/runs", json={"name": "seed", "project": "p"}).json()
    httpx.post(
        f"{server.root}/api/v1/runs/{run['id']}/events",
        json={"events": [{"seq": 1, "kind": "epoch_end", "epoch": 0, "metrics": {"loss": 1.0}}]},
    )
    yield server
    server.stop()


def answered(status, body, url):
    """A read, closed httpx answer `body` with `status`, as schemathesis' checks take them."""
    response = httpx.Response(status, json=body, request=httpx.Request("GET", url))
    response.read()
    response.elapsed = datetime.timedelta(0)
    return Response.from_any(response)


def test_the_conformance_check_refuses_answers_of_another_shape():
    operation = SCHEMA["/api/v1/runs/{run_id}"]["GET"]
    case = operation.Case(path_parameters={"run_id": 1})
    url = "http://127.0.0.1/api/v1/runs/1"
    with pytest.raises(AssertionError, match="uid"):  # a run without most of its fields
        operation.validate_response(answered(200, {"id": 1}, url), case=case)
    with pytest.raises(AssertionError, match="detail"):  # an error without its detail
        operation.validate_response(answered(404, {"error": "gone"}, url), case=case)
    operation.validate_response(answered(404, {"detail": "run 1 not found"}, url), case=case)


def takes_input(operation):
    raw = operation.definition.raw
    return bool(raw.get("parameters") or raw.get("requestBody"))


CASES = [
    pytest.param(operation, mode, id=f"{operation.label} {mode.value}")
    for operation in OPERATIONS
    for mode in CHECKS
    if mode is GenerationMode.POSITIVE or takes_input(operation)
]


@pytest.mark.parametrize(("operation", "mode"), CASES)
def test_api_never_errors_and_answers_match_the_schema(server, operation, mode):
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,  # the same cases on every run
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case):
        case.call_and_validate(base_url=server.root, checks=CHECKS[mode], timeout=10)

    fuzz()
