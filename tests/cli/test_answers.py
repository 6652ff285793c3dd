"""The client's answer records mirror the server's answer models in `/openapi.json`."""

import dataclasses

import pytest
from fastapi.testclient import TestClient

from callboard.client import _answers
from callboard.client._answers import ControlState, RunDetail, RunsPage, UnexpectedAnswer
from callboard.server.main import create_app
from callboard.server.settings import Settings

RECORDS = [
    _answers.RunSummary,
    _answers.RunDetail,
    _answers.RunsPage,
    _answers.ControlState,
    _answers.IngestResult,
    _answers.Heartbeat,
    _answers.Token,
    _answers.TokenList,
    _answers.Rule,
    _answers.RuleList,
]


@pytest.fixture(scope="module")
def schemas(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('openapi') / 'openapi.db'}"
    with TestClient(create_app(Settings(database_url=url)), base_url="http://127.0.0.1") as api:
        return api.get("/openapi.json").json()["components"]["schemas"]


@pytest.mark.parametrize("record", RECORDS, ids=lambda record: record.__name__)
def test_each_record_has_the_fields_of_the_server_model_of_its_name(schemas, record):
    documented = schemas[record.__name__]
    assert {field.name for field in dataclasses.fields(record)} == set(documented["required"])


@pytest.mark.parametrize("record", RECORDS, ids=lambda record: record.__name__)
def test_a_record_may_miss_exactly_the_fields_the_server_may_send_as_null(schemas, record):
    def nullable(field):
        return {"type": "null"} in field.get("anyOf", [])

    documented = schemas[record.__name__]["properties"]
    may_miss = {field.name for field in dataclasses.fields(record) if field.default is None}
    assert may_miss == {name for name, field in documented.items() if nullable(field)}


def test_a_record_ignores_new_fields_and_refuses_missing_ones():
    page = RunsPage.from_answer({"runs": [], "total": 0, "limit": 1, "offset": 0, "next": "x"})
    assert page == RunsPage(runs=[], total=0, limit=1, offset=0)
    with pytest.raises(UnexpectedAnswer, match="RunsPage without total"):
        RunsPage.from_answer({"runs": [], "limit": 1, "offset": 0})
    with pytest.raises(UnexpectedAnswer, match="RunSummary"):
        RunsPage.from_answer({"runs": [{"id": 1}], "total": 1, "limit": 1, "offset": 0})
    with pytest.raises(UnexpectedAnswer, match="a JSON object"):
        RunsPage.from_answer(["not", "a", "page"])


def control_state(**changes):
    state = {
        "run_id": 3,
        "status": "running",
        "stop_requested": False,
        "state": "none",
        "reason": None,
        "requested_at": None,
        "acknowledged_at": None,
        "stopped_at": None,
    }
    return {**state, **changes}


def test_a_field_the_server_may_send_as_null_may_also_be_missing():
    answer = {"run_id": 3, "status": "running", "stop_requested": True, "state": "requested"}
    assert ControlState.from_answer(answer) == ControlState.from_answer(control_state(**answer))
    assert ControlState.from_answer(answer).reason is None


@pytest.mark.parametrize(
    "changes, complaint",
    [
        ({"stop_requested": "false"}, "ControlState.stop_requested is 'false', not bool"),
        ({"run_id": True}, "ControlState.run_id is True, not int"),
        ({"run_id": "3"}, "ControlState.run_id is '3', not int"),
        ({"requested_at": "yesterday"}, "ControlState.requested_at is 'yesterday', not float"),
    ],
)
def test_a_value_of_another_json_type_is_refused_not_misread(changes, complaint):
    with pytest.raises(UnexpectedAnswer) as refused:
        ControlState.from_answer(control_state(**changes))
    assert str(refused.value) == complaint
    assert refused.value.answered  # a DeliveryFailed: asking again later is harmless


def test_whole_numbers_read_as_times_and_records_inside_records_as_records():
    state = ControlState.from_answer(control_state(requested_at=1700000000))
    assert state.requested_at == 1700000000
    summary = {
        "id": 3, "uid": "u", "name": "n", "project": "p", "status": "running", "ended": False,
        "source": "client", "tags": ["a"], "epochs_done": 0, "last": {"loss": "NaN"},
        "created_at": 1.5, "updated_at": 2, "stop": "none",
    }  # fmt: skip
    detail = {**summary, "config": {}, "versions": {}, "params": {}, "metrics": ["loss"]}
    run = RunDetail.from_answer({**detail, "control": control_state(), "added_later": [1]})
    assert run.control == ControlState.from_answer(control_state())
    assert (run.id, run.host, run.error, run.last) == (3, None, None, {"loss": "NaN"})
    with pytest.raises(UnexpectedAnswer, match="ControlState without run_id"):
        RunDetail.from_answer({**detail, "control": {}})
