"""The client's answer records mirror the server's answer models in `/openapi.json`."""

import dataclasses

import pytest
from fastapi.testclient import TestClient

from callboard.client import _answers
from callboard.client._answers import RunsPage, UnexpectedAnswer
from callboard.server.main import create_app
from callboard.server.settings import Settings

RECORDS = [
    _answers.RunSummary,
    _answers.RunsPage,
    _answers.ControlState,
    _answers.Token,
    _answers.TokenList,
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


def test_a_record_ignores_new_fields_and_refuses_missing_ones():
    page = RunsPage.from_answer({"runs": [], "total": 0, "limit": 1, "offset": 0, "next": "x"})
    assert page == RunsPage(runs=[], total=0, limit=1, offset=0)
    with pytest.raises(UnexpectedAnswer, match="RunsPage without total"):
        RunsPage.from_answer({"runs": [], "limit": 1, "offset": 0})
    with pytest.raises(UnexpectedAnswer, match="RunSummary"):
        RunsPage.from_answer({"runs": [{"id": 1}], "total": 1, "limit": 1, "offset": 0})
    with pytest.raises(UnexpectedAnswer, match="a JSON object"):
        RunsPage.from_answer(["not", "a", "page"])
