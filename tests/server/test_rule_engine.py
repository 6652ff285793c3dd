"""The rule engine on SQLite and PostgreSQL: each condition fires once per run and episode.

Each test waits for alerts through the long-poll (`GET /api/v1/alerts?wait=`).
To show a rule did *not* fire, a sentinel rule fires on a later point: once its
alert is out, every earlier point has been judged.
"""

import time

import pytest

from callboard.server.metric_keys import main_metric

from .helpers import create_run, epoch_event, post_events


def add_rule(api, condition, actions=None, name=None, project=None):
    body = {
        "name": name or condition["kind"],
        "condition": condition,
        "actions": actions or [{"kind": "command", "command": "checkpoint"}],
    }
    if project:
        body["project"] = project
    response = api.post("/api/v1/rules", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def alerts_after(api, after, count, wait=10.0):
    """The alerts after id `after`, once there are `count` of them (or the deadline passed)."""
    deadline = time.monotonic() + wait
    found = []
    while len(found) < count and (left := deadline - time.monotonic()) > 0:
        params = {"after": found[-1]["id"] if found else after, "wait": min(left, 5)}
        found += api.get("/api/v1/alerts", params=params).json()["alerts"]
    return found


def sentinel(api):
    """A rule that fires on metric `sentinel` above 0: the end of what a test posted."""
    return add_rule(api, {"kind": "above", "metric": "sentinel", "value": 0}, name="sentinel")


def judged(api, run_id, seq, after=0):
    """Post the sentinel point to run `run_id` and return every alert up to its own."""
    post_events(api, run_id, epoch_event(seq, 10_000, sentinel=1.0))
    found = []
    while not found or found[-1]["rule_name"] != "sentinel":
        more = alerts_after(api, found[-1]["id"] if found else after, 1)
        assert more, "the sentinel rule never fired"
        found += more
    return found[:-1]


def test_nan_fires_once_per_episode(api):
    add_rule(api, {"kind": "nan", "metric": "loss"})
    sentinel(api)
    run = create_run(api)
    losses = [1.0, "NaN", "Infinity", 0.5, "NaN"]
    post_events(api, run, *(epoch_event(i + 1, i, loss=loss) for i, loss in enumerate(losses)))
    fired = judged(api, run, 99)
    assert [(a["epoch"], a["value"], a["episode"]) for a in fired] == [(1, "NaN", 1), (4, "NaN", 2)]
    assert fired[0]["message"] == "loss is NaN at epoch 1"


def test_above_and_below(api):
    add_rule(api, {"kind": "above", "metric": "loss", "value": 2.0})
    add_rule(api, {"kind": "below", "metric": "accuracy", "value": 0.2})
    sentinel(api)
    run = create_run(api)
    post_events(
        api,
        run,
        epoch_event(1, 0, loss=1.0, accuracy=0.5),
        epoch_event(2, 1, loss=2.5, accuracy=0.1),
        epoch_event(3, 2, loss=3.0, accuracy=0.1),
    )
    fired = judged(api, run, 99)
    assert sorted((a["rule_name"], a["epoch"], a["value"]) for a in fired) == [
        ("above", 1, 2.5),
        ("below", 1, 0.1),
    ]


def test_plateau_follows_early_stopping(api):
    plateau = {"kind": "plateau", "metric": "val_loss", "patience": 2, "min_delta": 0.1}
    add_rule(api, plateau)
    sentinel(api)
    run = create_run(api)
    # 2.95 improves on 3.0 by less than min_delta: no improvement, as EarlyStopping judges it.
    losses = [3.0, 2.0, 2.95, 1.95, 1.0]
    post_events(api, run, *(epoch_event(i + 1, i, val_loss=v) for i, v in enumerate(losses)))
    fired = judged(api, run, 99)
    assert [(a["epoch"], a["episode"]) for a in fired] == [(3, 1)]
    assert "has not improved by more than 0.1 for 2 epochs (best 2)" in fired[0]["message"]


def test_worse_than_median_judges_against_the_projects_other_runs(api):
    condition = {"kind": "worse_than_median", "metric": "loss", "warmup": 1, "min_runs": 3}
    add_rule(api, condition, project="sweep")
    sentinel(api)
    good = [create_run(api, name=f"good{i}", project="sweep") for i in range(3)]
    for index, run in enumerate(good):
        losses = [2.0, 1.0 + index * 0.1]
        post_events(api, run, *(epoch_event(e + 1, e, loss=v) for e, v in enumerate(losses)))
    # Judged before the bad run exists: good2 (1.2) has two others (1.0, 1.1), fewer than 3.
    assert judged(api, good[-1], 99) == []
    bad = create_run(api, name="bad", project="sweep")
    # Epoch 0 is the warm-up: 9.0 there is not judged; 5.0 at epoch 1 is.
    post_events(api, bad, epoch_event(1, 0, loss=9.0), epoch_event(2, 1, loss=5.0))
    fired = judged(api, bad, 99, after=alerts_after(api, 0, 1)[-1]["id"])
    assert [(a["run"]["name"], a["epoch"]) for a in fired] == [("bad", 1)]
    assert "worse than the median 1.1 of 3 other runs" in fired[0]["message"]


def test_status_fires_when_the_run_ends_so(api):
    add_rule(api, {"kind": "status", "status": "failed"})
    run = create_run(api)
    post_events(api, run, {"seq": 1, "kind": "train_end", "data": {"status": "failed"}})
    fired = alerts_after(api, 0, 1)
    assert [(a["run"]["id"], a["message"]) for a in fired] == [(run, "the run is failed")]


def test_silent_fires_for_a_run_that_sends_nothing_and_ends_when_it_sends(api):
    add_rule(api, {"kind": "silent", "seconds": 1})
    run = create_run(api)
    first = alerts_after(api, 0, 1)
    assert first[0]["run"]["id"] == run and first[0]["message"].startswith("no event for")
    post_events(api, run, epoch_event(1, 0, loss=1.0))  # heard again: the episode ends
    second = alerts_after(api, first[0]["id"], 1)
    assert [(a["run"]["id"], a["episode"]) for a in second] == [(run, 2)]


def test_a_command_action_steers_the_run(api):
    actions = [
        {"kind": "command", "command": "set_learning_rate", "factor": 0.5},
        {"kind": "command", "command": "stop_after_epoch"},
    ]
    add_rule(api, {"kind": "above", "metric": "loss", "value": 1.0}, actions, name="cool down")
    run = create_run(api)
    post_events(api, run, epoch_event(1, 0, loss=2.0, learning_rate=0.01))
    fired = alerts_after(api, 0, 1)
    commands = api.get(f"/api/v1/runs/{run}/commands").json()["commands"]
    assert [(c["kind"], c["value"], c["requested_by"]) for c in commands] == [
        ("set_learning_rate", pytest.approx(0.005), "rule cool down"),
        ("stop_after_epoch", None, "rule cool down"),
    ]
    assert (
        fired[0]["done"][0]
        == f"command set_learning_rate 0.005 requested (command {commands[0]['id']})"
    )
    kinds = [e["kind"] for e in api.get(f"/api/v1/runs/{run}/events").json()["events"]]
    assert kinds.count("rule_fired") == 1


def test_a_factor_without_a_learning_rate_says_so(api):
    actions = [{"kind": "command", "command": "set_learning_rate", "factor": 0.5}]
    add_rule(api, {"kind": "nan", "metric": "loss"}, actions)
    run = create_run(api)
    post_events(api, run, epoch_event(1, 0, loss="NaN"))
    fired = alerts_after(api, 0, 1)
    assert fired[0]["done"] == [
        "command set_learning_rate not sent: the run reports no learning rate"
    ]
    assert api.get(f"/api/v1/runs/{run}/commands").json()["commands"] == []


def test_a_rule_of_another_project_does_not_watch_this_one(api):
    add_rule(api, {"kind": "nan", "metric": "loss"}, project="other")
    sentinel(api)
    run = create_run(api, project="mine")
    post_events(api, run, epoch_event(1, 0, loss="NaN"))
    assert judged(api, run, 99) == []


def test_a_removed_rule_stops_watching(api):
    rule = add_rule(api, {"kind": "nan", "metric": "loss"})
    sentinel(api)
    assert api.delete(f"/api/v1/rules/{rule}").status_code == 200
    run = create_run(api)
    post_events(api, run, epoch_event(1, 0, loss="NaN"))
    assert judged(api, run, 99) == []


def test_a_restarted_server_goes_on_where_the_episode_stood(settings):
    from fastapi.testclient import TestClient

    from callboard.server.main import create_app

    with TestClient(create_app(settings)) as api:
        add_rule(api, {"kind": "nan", "metric": "loss"})
        sentinel(api)
        run = create_run(api)
        post_events(api, run, epoch_event(1, 0, loss=1.0), epoch_event(2, 1, loss="NaN"))
        (first,) = alerts_after(api, 0, 1)
    with TestClient(create_app(settings)) as api:  # a new process: nothing known in memory
        post_events(api, run, epoch_event(3, 2, loss="NaN"))  # the same episode goes on
        assert judged(api, run, 4, after=first["id"]) == []
        post_events(api, run, epoch_event(5, 3, loss=0.5), epoch_event(6, 4, loss="NaN"))
        again = alerts_after(api, first["id"], 2)
    assert [(a["rule_name"], a["epoch"], a["episode"]) for a in again] == [
        ("sentinel", 10_000, 1),
        ("nan", 4, 2),
    ]


def test_silent_fires_while_only_machine_samples_arrive(api):
    """A hung training whose system-metrics thread goes on is silent all the same."""
    add_rule(api, {"kind": "silent", "seconds": 1})
    run = create_run(api)
    post_events(api, run, {"seq": 1, "kind": "batch_end", "step": 7, "metrics": {"loss": 1.0}})
    fired, seq, deadline = [], 2, time.monotonic() + 10
    while not fired:
        assert time.monotonic() < deadline, "silent never fired while samples arrived"
        sample = {"seq": seq, "kind": "metrics", "step": seq, "metrics": {"system/cpu_percent": 5}}
        post_events(api, run, sample)
        seq += 1
        fired = api.get("/api/v1/alerts", params={"wait": 0.3}).json()["alerts"]
    detail = api.get(f"/api/v1/runs/{run}").json()
    assert detail["last_step"] == 7  # the samples' steps are theirs, not training's


def test_a_machine_sample_is_never_what_a_run_is_judged_by():
    assert main_metric(["system/cpu_percent", "zeta"]) == "zeta"
