"""The training's push channel: `GET /runs/{id}/commands/pending` long-polls against a real
server (uvicorn in this process, SQLite and PostgreSQL; two replicas on PostgreSQL)."""

import concurrent.futures
import socket
import time

import httpx
import pytest

from callboard.server.api.routes import commands as command_routes

from .helpers import SERVERS_OWN, create_run, epoch_event, post_events, serving


@pytest.fixture
def served(settings):
    with serving(settings) as served:
        yield served


@pytest.fixture
def polls():
    """Runs long-polls on threads: `polls(root, run_id, **params)` -> a future of the answer."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:

        def poll(root, run_id, headers=None, **params):
            def call():
                with httpx.Client(base_url=root, timeout=60) as client:
                    path = f"/api/v1/runs/{run_id}/commands/pending"
                    return client.get(path, params=params, headers=headers)

            return pool.submit(call)

        yield poll


def wait_for(condition, what, timeout=15):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def issue(client, run_id, kind, **fields):
    answer = client.post(f"/api/v1/runs/{run_id}/commands", json={"kind": kind, **fields})
    assert answer.status_code == 201, answer.text
    return answer.json()


def subscribed(app, count=1):
    """True once `count` subscriptions are open besides the server's own (its rule engine's)."""
    return lambda: app.state.hub.subscriber_count() == SERVERS_OWN + count


def test_a_pending_command_is_answered_at_once(served):
    _app, root = served
    with httpx.Client(base_url=root, timeout=10) as client:  # far below the 30 s wait
        run_id = create_run(client)
        command = issue(client, run_id, "checkpoint")
        answer = client.get(f"/api/v1/runs/{run_id}/commands/pending", params={"wait": 30})
        assert answer.status_code == 200
        (delivered,) = answer.json()["commands"]
        assert delivered["id"] == command["id"] and delivered["state"] == "delivered"


def test_a_waiting_poll_wakes_when_a_command_is_issued(served, polls):
    app, root = served
    with httpx.Client(base_url=root, timeout=10) as client:
        run_id = create_run(client)
        waiting = polls(root, run_id, wait=30)
        wait_for(subscribed(app), "the poll never subscribed")
        command = issue(client, run_id, "set_learning_rate", value=0.02)
        answer = waiting.result(timeout=60)
        assert answer.status_code == 200
        assert [(c["id"], c["state"], c["value"]) for c in answer.json()["commands"]] == [
            (command["id"], "delivered", 0.02)
        ]
        wait_for(subscribed(app, 0), "the poll's subscription was left behind")


def test_a_poll_with_nothing_to_deliver_answers_empty_after_its_wait(served):
    _app, root = served
    with httpx.Client(base_url=root, timeout=10) as client:
        run_id = create_run(client)
        settled = issue(client, run_id, "pause")
        path = f"/api/v1/runs/{run_id}/commands/{settled['id']}/outcome"
        client.post(path, json={"state": "applied"})
        answer = client.get(f"/api/v1/runs/{run_id}/commands/pending", params={"wait": 0.2})
        assert answer.status_code == 200 and answer.json() == {"commands": []}
        for wait in (-1, 30.5, "soon"):
            refused = client.get(f"/api/v1/runs/{run_id}/commands/pending", params={"wait": wait})
            assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][-1] == "wait"


def test_epoch_posts_do_not_wake_a_waiting_poll(served, polls, monkeypatch):
    app, root = served
    reads = []
    read_pending = command_routes._read_pending

    def counted(*args):
        reads.append(args)
        return read_pending(*args)

    monkeypatch.setattr(command_routes, "_read_pending", counted)
    with httpx.Client(base_url=root, timeout=10) as client:
        run_id = create_run(client)
        waiting = polls(root, run_id, wait=30)
        wait_for(subscribed(app), "the poll never subscribed")
        for seq in range(1, 6):
            post_events(client, run_id, epoch_event(seq, seq - 1, loss=1.0 / seq))
        client.post(f"/api/v1/runs/{run_id}/heartbeat")
        command = issue(client, run_id, "stop_after_epoch")
        assert [c["id"] for c in waiting.result(timeout=60).json()["commands"]] == [command["id"]]
    assert len(reads) == 2  # once on arrival, once when the command woke it


def test_a_revoked_token_gets_401_at_its_next_wake(served, polls):
    app, root = served
    with httpx.Client(base_url=root, timeout=10) as client:
        run_id = create_run(client)
        admin = client.post("/api/v1/tokens", json={"name": "root", "role": "admin"}).json()
        client.headers["Authorization"] = f"Bearer {admin['token']}"
        trainer = client.post("/api/v1/tokens", json={"name": "trainer", "role": "ingest"}).json()
        waiting = polls(root, run_id, {"Authorization": f"Bearer {trainer['token']}"}, wait=30)
        wait_for(subscribed(app), "the poll never subscribed")
        assert client.delete(f"/api/v1/tokens/{trainer['id']}").status_code == 200
        issue(client, run_id, "pause")
        answer = waiting.result(timeout=60)
        assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Bearer"
        # Nothing was delivered to the revoked caller.
        (command,) = client.get(f"/api/v1/runs/{run_id}/commands").json()["commands"]
        assert command["state"] == "requested" and command["delivered_at"] is None


def test_a_client_hanging_up_leaves_no_subscription_behind(served):
    app, root = served
    with httpx.Client(base_url=root, timeout=10) as client:
        run_id = create_run(client)
    host, port = root.removeprefix("http://").split(":")
    request = f"GET /api/v1/runs/{run_id}/commands/pending?wait=30 HTTP/1.1\r\nHost: {host}\r\n\r\n"
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(request.encode())
        wait_for(subscribed(app), "the poll never subscribed")
    # Released at the hang-up, long before the 30 s wait would have ended.
    wait_for(subscribed(app, 0), "a hung-up poll kept its subscription", timeout=10)


def test_a_command_issued_on_one_replica_wakes_a_poll_on_another(settings, polls):
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("replicas share a PostgreSQL database")
    with (
        serving(settings) as (_app_a, root_a),
        serving(settings) as (app_b, root_b),
        httpx.Client(base_url=root_a, timeout=10) as client,
    ):
        run_id = create_run(client)
        waiting = polls(root_b, run_id, wait=30)
        wait_for(subscribed(app_b), "the poll never subscribed on replica B")
        command = issue(client, run_id, "resume")
        answer = waiting.result(timeout=60)
        assert [c["id"] for c in answer.json()["commands"]] == [command["id"]]
