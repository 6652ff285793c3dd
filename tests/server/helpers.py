"""Small builders for API tests."""

import contextlib
import itertools
import threading
import time

import uvicorn

from callboard.server.main import create_app
from tests.server_process import free_port

_uids = itertools.count(1)
# Hub subscriptions a server holds of its own: the rule engine follows rule changes
# (`RuleEngine.start`). Leak checks count the others.
SERVERS_OWN = 1


def create_run(api, name="run", project="default", **fields):
    response = api.post(
        "/api/v1/runs",
        json={"name": name, "project": project, "uid": f"uid-{next(_uids):06d}", **fields},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def epoch_event(seq, epoch, **metrics):
    return {"seq": seq, "kind": "epoch_end", "epoch": epoch, "metrics": metrics}


def post_events(api, run_id, *events):
    response = api.post(f"/api/v1/runs/{run_id}/events", json={"events": list(events)})
    assert response.status_code == 200, response.text
    return response.json()


def wait_until_lost(api, run_id, timeout=5):
    """Poll until the sweeper has marked run `run_id` lost."""
    deadline = time.monotonic() + timeout
    while api.get(f"/api/v1/runs/{run_id}").json()["status"] != "lost":
        assert time.monotonic() < deadline, "the sweeper never marked the run lost"
        time.sleep(0.1)


@contextlib.contextmanager
def serving(settings):
    """`settings`' app served by uvicorn on a thread of this process: `(app, root)`."""
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield app, f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)
