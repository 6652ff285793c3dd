"""What a security tester found after issue 11's fixes: each hole with the test that shows it."""

import pytest

from .helpers import create_run, post_events
from .test_http_hardening import open_app


@pytest.mark.parametrize("status", [[], {}, ["failed"], {"a": 1}, 1, None])
def test_train_end_with_a_status_that_is_not_text_ends_the_run_finished(api, status):
    """A list or object as train_end's status was a 500 (unhashable): the client retried
    the batch forever and lost its epochs with it."""
    run_id = create_run(api)
    post_events(
        api,
        run_id,
        {"seq": 1, "kind": "epoch_end", "epoch": 0, "metrics": {"loss": 0.5}},
        {"seq": 2, "kind": "train_end", "data": {"status": status}},
    )
    run = api.get(f"/api/v1/runs/{run_id}").json()
    assert (run["status"], run["epochs_done"]) == ("finished", 1)


BEYOND_ROW_IDS = 2**31  # runs' and tokens' ids are INTEGER columns on PostgreSQL


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/runs/{id}"),
        ("GET", "/api/v1/runs/{id}/events"),
        ("GET", "/api/v1/runs/{id}/export.csv"),
        ("GET", "/api/v1/runs/{id}/metrics"),
        ("GET", "/api/v1/runs/{id}/metrics/loss"),
        ("GET", "/api/v1/runs/{id}/control"),
        ("GET", "/api/v1/runs/{id}/stream"),
        ("GET", "/runs/{id}"),
        ("POST", "/api/v1/runs/{id}/stop"),
        ("POST", "/api/v1/runs/{id}/heartbeat"),
        ("POST", "/api/v1/runs/{id}/control/ack"),
        ("POST", "/api/v1/runs/{id}/events"),
        ("DELETE", "/api/v1/tokens/{id}"),
    ],
)
def test_an_id_beyond_any_run_or_token_is_refused_not_a_500(api, method, path):
    """2**31 up to 2**63 - 1 passed the path check; PostgreSQL refused the number (500)."""
    body = {"events": []} if path.endswith("/events") and method == "POST" else None
    answer = api.request(method, path.format(id=BEYOND_ROW_IDS), json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"][-1] in ("run_id", "token_id")


@pytest.mark.parametrize("path", ["/api/v1/sparklines", "/api/v1/extremes", "/compare"])
def test_run_ids_beyond_any_run_in_a_list_are_left_out(api, path):
    run_id = create_run(api)
    answer = api.get(path, params={"ids": f"{run_id},{BEYOND_ROW_IDS},999999999999999999"})
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    "host",
    [
        "localhost:80@evil.example",
        "127.0.0.1:8000.evil.example",
        "[::1].evil.example",
        "[::1]evil.example",
        "localhost:8000:evil.example",
    ],
)
def test_open_server_refuses_a_host_header_that_only_starts_like_loopback(tmp_path, host):
    """Host names were cut at the first ':' or after ']', so these passed as loopback."""
    with open_app(tmp_path) as api:
        assert api.get("/api/v1/runs", headers={"Host": host}).status_code == 400
        assert api.get("/api/v1/runs", headers={"Host": "localhost:8000"}).status_code == 200
