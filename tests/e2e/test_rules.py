"""Rules and alerts end to end: real `callboard serve`, real Keras fits, a real webhook receiver.

No training script changes: the server watches the runs, posts webhooks and steers
the trainings (through `RemoteControl`'s command channel) on its own.
"""

import hashlib
import hmac
import json
import math
import signal

import httpx
import keras

from callboard.client import RemoteControl, RemoteMonitor
from tests.server.fresh_postgres import fresh_postgres_database
from tests.server_process import ServerProcess

from .test_faults import start_training_process
from .test_remote_control import wait_for
from .test_training import unique
from .training import slow_batches, tiny_data, tiny_model

SECRET = "a shared secret"


def add_rule(root, project, condition, actions, name=None):
    body = {"name": name or condition["kind"], "condition": condition, "actions": actions}
    if project is not None:
        body["project"] = project
    answer = httpx.post(f"{root}/api/v1/rules", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def run_named(root, name, project):
    runs = httpx.get(f"{root}/api/v1/runs", params={"name": name, "project": project}).json()
    return runs["runs"][0]


def alerts_of(root, run_id):
    return httpx.get(f"{root}/api/v1/alerts", params={"run_id": run_id}).json()["alerts"]


def all_delivered(root, rules):
    deliveries = [
        delivery
        for rule in rules
        for delivery in httpx.get(f"{root}/api/v1/rules/{rule['id']}/deliveries").json()[
            "deliveries"
        ]
    ]
    return all(delivery["state"] == "delivered" for delivery in deliveries)


def signature_of(body):
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def exploding_model(seed=0):
    """A tiny model whose learning rate makes its loss overflow to infinity, then NaN."""
    model = tiny_model(seed)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e4), loss="mse")
    return model


def fit(root, name, project, model=None, epochs=6, control=False, batch_seconds=0.0):
    x, y = tiny_data()
    callbacks = [RemoteMonitor(root=root, run=name, project=project)]
    if control:
        callbacks.append(RemoteControl())
    if batch_seconds:
        callbacks.append(slow_batches(batch_seconds))
    history = (model or tiny_model()).fit(
        x, y, epochs=epochs, batch_size=16, verbose=0, callbacks=callbacks
    )
    return history.history


def test_a_loss_gone_nan_posts_one_signed_webhook(live_server, receiver):
    root, project, name = live_server.root, unique("nan-project"), unique("exploding")
    hook = {"kind": "webhook", "url": receiver.url("/hook"), "secret": SECRET}
    rule = add_rule(root, project, {"kind": "nan", "metric": "loss"}, [hook], name="loss went NaN")
    history = fit(root, name, project, exploding_model())
    assert not all(math.isfinite(loss) for loss in history["loss"]), "the loss never blew up"
    run = run_named(root, name, project)
    (post,) = receiver.wait_for(1, "/hook")
    assert post.headers["X-Callboard-Signature"] == signature_of(post.body)
    alert = json.loads(post.body)
    assert alert["run"] == {
        "id": run["id"],
        "name": name,
        "project": project,
        "url": f"{root}/runs/{run['id']}",
    }
    first_bad = next(e for e, loss in enumerate(history["loss"]) if not math.isfinite(loss))
    assert (alert["metric"], alert["epoch"]) == ("loss", first_bad)
    assert alert["value"] in ("NaN", "Infinity") and "loss went NaN" in alert["text"]
    events = httpx.get(f"{root}/api/v1/runs/{run['id']}/events").json()["events"]
    stored_at = next(e["received_at"] for e in events if e["epoch"] == first_bad)
    print(f"webhook received {post.at - stored_at:.3f} s after the epoch was stored")
    assert [a["epoch"] for a in alerts_of(root, run["id"])] == [first_bad]
    (delivery,) = httpx.get(f"{root}/api/v1/rules/{rule['id']}/deliveries").json()["deliveries"]
    assert (delivery["state"], delivery["attempts"]) == ("delivered", 1)


def test_a_plateau_rule_ends_a_real_fit_after_its_epoch(live_server):
    root, project, name = live_server.root, unique("plateau-project"), unique("plateaued")
    # No epoch improves the loss by 100: the plateau is reached at epoch 2 (patience 2).
    condition = {"kind": "plateau", "metric": "loss", "patience": 2, "min_delta": 100}
    stop = {"kind": "command", "command": "stop_after_epoch"}
    add_rule(root, project, condition, [stop], name="no progress")
    history = fit(root, name, project, epochs=500, control=True, batch_seconds=0.01)
    assert 3 <= len(history["loss"]) < 20, "the rule did not end the fit soon after epoch 2"
    run = run_named(root, name, project)
    assert run["status"] == "stopped"
    events = httpx.get(f"{root}/api/v1/runs/{run['id']}/events").json()["events"]
    fired = [e for e in events if e["kind"] == "rule_fired"]
    assert [(e["data"]["rule_name"], e["data"]["epoch"]) for e in fired] == [("no progress", 2)]
    requested = next(e for e in events if e["kind"] == "command_requested")
    assert requested["data"]["by"] == "rule no progress"
    assert requested["data"]["kind"] == "stop_after_epoch"


def test_worse_than_median_stops_the_worst_of_four_runs(live_server):
    root, project = live_server.root, unique("sweep")
    condition = {"kind": "worse_than_median", "metric": "loss", "warmup": 1, "min_runs": 3}
    add_rule(root, project, condition, [{"kind": "command", "command": "stop"}], name="pruner")
    good = [unique(f"good{seed}") for seed in range(3)]
    for seed, name in enumerate(good):
        fit(root, name, project, tiny_model(seed), epochs=4, control=True)
    worst = unique("worst")
    history = fit(
        root, worst, project, exploding_model(), epochs=500, control=True, batch_seconds=0.01
    )
    assert len(history["loss"]) < 20, "the worst run was not stopped"
    statuses = {name: run_named(root, name, project)["status"] for name in [*good, worst]}
    assert statuses == {**dict.fromkeys(good, "finished"), worst: "stopped"}
    alerts = httpx.get(f"{root}/api/v1/alerts", params={"limit": 500}).json()["alerts"]
    assert {a["run"]["name"] for a in alerts if a["run"]["project"] == project} == {worst}


def test_a_silent_rule_fires_for_a_training_killed_with_sigkill(server_factory, receiver):
    server = server_factory()
    add_rule(
        server.root,
        None,
        {"kind": "silent", "seconds": 3},
        [{"kind": "webhook", "url": receiver.url("/silent")}],
        name="gone quiet",
    )
    name = unique("killed")
    process = start_training_process(server.root, name)
    try:
        wait_for(
            lambda: (
                (runs := httpx.get(f"{server.root}/api/v1/runs").json()["runs"])
                and runs[0]["epochs_done"] >= 2
            ),
            "two epochs",
        )
        assert receiver.received("/silent") == []  # epochs every 0.3 s: never silent
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    (post,) = receiver.wait_for(1, "/silent")
    alert = json.loads(post.body)
    assert alert["run"]["name"] == name and alert["message"].startswith("no event for")


def test_two_replicas_post_one_webhook_per_firing(receiver):
    with fresh_postgres_database("callboard_rules") as url:
        a = ServerProcess(url).start()
        b = ServerProcess(url).start()
        try:
            hook = {"kind": "webhook", "url": receiver.url("/hook")}
            rules = [
                add_rule(a.root, "replicated", {"kind": "nan", "metric": "loss"}, [hook]),
                add_rule(b.root, "replicated", {"kind": "silent", "seconds": 1}, [hook]),
            ]
            run = httpx.post(f"{a.root}/api/v1/runs", json={"name": "r", "project": "replicated"})
            run_id = run.json()["id"]
            # Episodes of NaN, each epoch posted through the other replica: both judge the run.
            losses = [1.0, "NaN", "NaN", 0.5, "NaN", 0.4, "NaN"]
            for epoch, loss in enumerate(losses):
                server = (a, b)[epoch % 2]
                event = {"seq": epoch + 1, "kind": "epoch_end", "epoch": epoch}
                event["metrics"] = {"loss": loss}
                answer = httpx.post(
                    f"{server.root}/api/v1/runs/{run_id}/events", json={"events": [event]}
                )
                assert answer.status_code == 200, answer.text
            # The run then falls silent: both replicas' clocks judge it.
            posts = receiver.wait_for(4, "/hook")
            alerts = alerts_of(a.root, run_id)
            assert sorted(a["message"][:10] for a in alerts) == [
                "loss is Na",
                "loss is Na",
                "loss is Na",
                "no event f",
            ]
            keys = [post.headers["Idempotency-Key"] for post in posts]
            assert len(keys) == len(set(keys)) == 4
            wait_for(lambda: len(alerts_of(b.root, run_id)) == 4, "B sees the same alerts")
            wait_for(lambda: all_delivered(b.root, rules), "every delivery settled")
            assert len(receiver.received("/hook")) == 4  # settled: none will be posted again
        finally:
            a.stop()
            b.stop()
