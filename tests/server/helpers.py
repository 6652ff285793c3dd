"""Small builders for API tests."""

import itertools
import time

_uids = itertools.count(1)


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
