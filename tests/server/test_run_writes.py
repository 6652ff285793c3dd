"""One write path: every change to a run is stored by the group-commit writer, then published.

Creation, events, stock Keras posts, stop, its acknowledgement, a heartbeat
reviving a lost run and the silent-run sweep all reach the live hub the same
way: the run's channel and the runs-list channel, once their work committed.
On PostgreSQL, a change made through one app wakes another app's subscribers.
"""

import asyncio
import time

import pytest
from fastapi.testclient import TestClient

from callboard.server.lifecycle import SWEEP_BATCH, mark_silent_runs
from callboard.server.live.hub import RUNS_CHANNEL, commands_channel, run_channel
from callboard.server.main import create_app
from callboard.server.settings import Settings
from callboard.server.store import migrate

from .fresh_postgres import fresh_postgres_database
from .helpers import create_run, epoch_event, post_events, wait_until_lost


class Recorder:
    """Counts the app's group-commit jobs (the sweeper's aside: it runs on its own clock) and
    records the channels its hub publishes."""

    def __init__(self, app, monkeypatch):
        self.jobs, self.published = 0, []
        writer, hub = app.state.writer, app.state.hub
        run, publish = writer.run, hub.publish

        async def counted(work, order=0, size=1):
            if getattr(work, "func", None) is not mark_silent_runs:
                self.jobs += 1
            return await run(work, order=order, size=size)

        def recorded(*channels):
            self.published.append(channels)
            publish(*channels)

        monkeypatch.setattr(writer, "run", counted)
        monkeypatch.setattr(hub, "publish", recorded)

    def during(self, action):
        """`(action's result, jobs it ran, channel tuples it published)`."""
        jobs, published = self.jobs, len(self.published)
        result = action()
        return result, self.jobs - jobs, self.published[published:]


def changed(run_id):
    return (run_channel(run_id), RUNS_CHANNEL)


def test_every_kind_of_write_goes_through_the_writer_and_is_published_alike(api, monkeypatch):
    recorder = Recorder(api.app, monkeypatch)

    run_id, jobs, published = recorder.during(lambda: create_run(api, "written"))
    assert jobs == 1 and published == [changed(run_id)]

    _, jobs, published = recorder.during(
        lambda: post_events(api, run_id, epoch_event(1, 0, loss=0.5))
    )
    assert jobs == 1 and published == [changed(run_id)]

    stock, jobs, published = recorder.during(
        lambda: api.post("/publish/epoch/end/?run=stock", data={"data": '{"epoch": 0}'}).json()
    )
    assert jobs == 1 and published == [changed(stock["run_id"])]

    for path in ("stop", "control/ack"):
        answer, jobs, published = recorder.during(
            lambda path=path: api.post(f"/api/v1/runs/{run_id}/{path}")
        )
        assert answer.status_code == 200, answer.text
        wakes = (commands_channel(run_id),) if path == "stop" else ()  # a stop command: polls wake
        assert jobs == 1 and published == [(run_channel(run_id), *wakes, RUNS_CHANNEL)], path
        # Asking again changes nothing, so nothing is published.
        again, jobs, published = recorder.during(
            lambda path=path: api.post(f"/api/v1/runs/{run_id}/{path}")
        )
        assert again.json() == answer.json()
        assert jobs == 1 and published == [], path

    # A heartbeat of a running run changes no status: stored, not published.
    beat, jobs, published = recorder.during(
        lambda: api.post(f"/api/v1/runs/{run_id}/heartbeat").json()
    )
    assert beat == {"status": "running"} and jobs == 1 and published == []

    # Refused or unknown: stored nothing, published nothing.
    ended = create_run(api, "ended")
    post_events(api, ended, {"seq": 1, "kind": "train_end", "data": {"status": "finished"}})
    for path, status in ((f"{ended}/stop", 409), ("999/stop", 404), ("999/heartbeat", 404)):
        answer, _, published = recorder.during(lambda path=path: api.post(f"/api/v1/runs/{path}"))
        assert answer.status_code == status and published == [], path


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_sweep_and_a_reviving_heartbeat_are_published_alike(api, settings, monkeypatch):
    recorder = Recorder(api.app, monkeypatch)
    settings.lost_after_seconds = 0.3
    run_id = create_run(api, "silent")
    stock = api.post("/publish/epoch/end/", data={"data": '{"epoch": 0}'}).json()["run_id"]

    wait_until_lost(api, run_id)
    wait_for(lambda: api.get(f"/api/v1/runs/{stock}").json()["status"] == "finished")
    swept = {channel for channels in recorder.published for channel in channels}
    assert {run_channel(run_id), run_channel(stock), RUNS_CHANNEL} <= swept
    kinds = [e["kind"] for e in api.get(f"/api/v1/runs/{run_id}/events").json()["events"]]
    assert kinds == ["lost"]

    settings.lost_after_seconds = 3600.0  # the revived run stays running
    beat, jobs, published = recorder.during(
        lambda: api.post(f"/api/v1/runs/{run_id}/heartbeat").json()
    )
    assert beat == {"status": "running"} and jobs == 1 and published == [changed(run_id)]


def test_runs_gone_silent_together_are_marked_in_short_writes(api, settings, monkeypatch):
    # One sweep marked every silent run in one transaction: thousands of runs lost at once
    # (a cluster restart) held the writer, and every other write, for seconds.
    batches = []

    def recorded(*args, **kwargs):
        marked = mark_silent_runs(*args, **kwargs)
        batches.append(len(marked))
        return marked

    monkeypatch.setattr("callboard.server.main.mark_silent_runs", recorded)
    settings.lost_after_seconds = 3600.0
    ids = [create_run(api, f"silent-{i}") for i in range(SWEEP_BATCH + 5)]
    settings.lost_after_seconds = 0.0  # every one of them is silent at the next sweep
    wait_for(lambda: sum(batches) == len(ids))
    assert max(batches) == SWEEP_BATCH  # the first batch, then the rest at once
    statuses = {api.get(f"/api/v1/runs/{run_id}").json()["status"] for run_id in ids}
    assert statuses == {"lost"}


@pytest.fixture(scope="module")
def shared_postgres():
    with fresh_postgres_database("callboard_writes") as url:
        migrate.upgrade(url)
        yield url


def test_a_stop_through_one_app_wakes_the_other_apps_subscribers(shared_postgres):
    settings = Settings(database_url=shared_postgres, skip_migrations=True)
    with TestClient(create_app(settings)) as a, TestClient(create_app(settings)) as b:
        # Created through B: B's own publish is over before anyone subscribes.
        run_id = create_run(b, "stopped-across")

        async def scenario():
            with b.app.state.hub.subscribe(run_channel(run_id)) as on_b:
                stopped = await asyncio.to_thread(
                    a.post, f"/api/v1/runs/{run_id}/stop", json={"reason": "enough"}
                )
                assert stopped.status_code == 200, stopped.text
                assert await on_b.wait(10), "B's hub was never told of A's stop"

        asyncio.run(scenario())
        control = b.get(f"/api/v1/runs/{run_id}/control").json()
        assert control["state"] == "requested" and control["reason"] == "enough"
