"""Rules: ingest with 20 active rules beside none, and how soon a firing's webhook arrives.

Ingest: two fresh `callboard serve` processes on SQLite, one without rules and one
with 20 rules on the metrics being posted (NaN, thresholds, plateaus, worse than
the median, statuses, silence; none fires on these loads), measured in turns with
the ingest benchmark's loads (one client posting epochs one after another, then 8
clients at once), who goes first alternating by round; the medians are compared.
Rules are judged off the request path: the target is the rules server's rate
≥ 90 % of the other's. After each window the benchmark waits until the server's
CPU is quiet, so the rule engine's backlog is counted in that window's server CPU
per request and does not spill into the next window.

Firing: a third fresh server with the same 20 rules and an `above` rule whose
webhook posts to a receiver thread of this process; on fresh runs, an epoch
under the threshold, then one above it; timed from that POST's answer (the event
is stored) to the webhook's arrival.
"""

import contextlib
import json
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .ceiling import process_cpu_seconds
from .common import EPOCH_KEYS, CallboardApi, JsonConnection, epoch_event, percentile
from .ingest import CLIENTS, callboard_peer, concurrent_epochs, sequential_epochs
from .report import Report

PROJECT = "bench"  # the project the ingest loads' runs are in
RATE_TARGET = 0.9  # with rules / without
FIRING_TARGET = 2.0  # seconds, p95 from the event stored to the webhook received
FIRING_THRESHOLD, FIRING_VALUE = 1.0, 2.0  # the epochs posted otherwise hold 0.5 and less
WARM_FIRINGS = 3  # firings before the timed ones (connections, code paths), not counted
DEAD_HOOK = "http://127.0.0.1:9/hook"  # the discard port: the quiet rules' webhooks never post
# The loads leave their runs running: after the default 60 s they would turn `lost` and fire
# the `status: lost` rule mid-measurement. Both servers are told the same.
SERVER_ENV = {"CALLBOARD_LOST_AFTER_SECONDS": "86400"}
QUIET_CPU = 0.02  # CPU seconds per 0.1 s below which a server counts as quiet (20 % of a core)


def quiet_rules():
    """20 rules on every run of `PROJECT` (a third of them on every project) that watch
    the metrics the loads post (`EPOCH_KEYS`, each 0.5 / (epoch + 1)), none of which fires.

    Example:
        >>> len(quiet_rules()), quiet_rules()[0]["condition"]
        (20, {'kind': 'nan', 'metric': 'loss'})
    """
    loss, accuracy = ("loss", "val_loss"), ("accuracy", "val_accuracy")
    conditions = [
        *({"kind": "nan", "metric": key} for key in EPOCH_KEYS),
        *({"kind": "above", "metric": key, "value": 10.0} for key in loss),
        {"kind": "above", "metric": "accuracy", "value": 2.0},
        *({"kind": "below", "metric": key, "value": -1.0} for key in (*accuracy, "loss")),
        {"kind": "plateau", "metric": "val_loss", "patience": 100_000, "min_delta": 1e-4},
        {"kind": "plateau", "metric": "loss", "patience": 100_000},
        {"kind": "plateau", "metric": "val_accuracy", "patience": 100_000, "mode": "max"},
        *({"kind": "worse_than_median", "metric": key, "warmup": 5} for key in loss),
        {"kind": "worse_than_median", "metric": "val_accuracy", "warmup": 5, "mode": "max"},
        *({"kind": "status", "status": status} for status in ("failed", "lost", "stopped")),
        {"kind": "silent", "seconds": 3600},
    ]
    actions = [
        [{"kind": "webhook", "url": DEAD_HOOK, "secret": "s3cret"}],
        [{"kind": "command", "command": "stop"}],
        [
            {"kind": "command", "command": "set_learning_rate", "factor": 0.5},
            {"kind": "webhook", "url": DEAD_HOOK},
        ],
    ]
    return [
        {
            "name": f"quiet {index}: {condition['kind']}",
            "project": None if index % 3 == 2 else PROJECT,
            "condition": condition,
            "actions": actions[index % len(actions)],
        }
        for index, condition in enumerate(conditions)
    ]


@contextlib.contextmanager
def rules_server(database_url, rules):
    """A fresh `callboard serve` on `database_url` with `rules` added, for a `with` block."""
    from tests.server_process import ServerProcess

    server = ServerProcess(database_url, env=SERVER_ENV).start(
        timeout=180
    )  # migrations on a busy box
    try:
        api = JsonConnection(server.root)
        for rule in rules:
            api.post("/api/v1/rules", rule)
        api.close()
        yield server
    finally:
        server.stop()


def wait_until_quiet(pid, timeout=30):
    """Return once process `pid` uses less than `QUIET_CPU` per 0.1 s (or `timeout` passed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        used = process_cpu_seconds(pid)
        time.sleep(0.1)
        if process_cpu_seconds(pid) - used < QUIET_CPU:
            return


def _window(measure, server, seconds):
    """`(rate, server CPU µs per request)` of one window of load `measure` on `server`."""
    pid = server.process.pid
    cpu = process_cpu_seconds(pid)
    rate = measure(callboard_peer(server.root), seconds)
    wait_until_quiet(pid)
    return rate, (process_cpu_seconds(pid) - cpu) / (rate * seconds) * 1e6


def ingest_in_turns(servers, seconds, rounds):
    """`{(load, server name): [(rate, CPU µs per request), ...]}`, one window per round each,
    who goes first alternating from round to round."""
    loads = {"1 client": sequential_epochs, f"{CLIENTS} clients": concurrent_epochs}
    windows = {}
    for load, measure in loads.items():
        for round_ in range(rounds):
            names = list(servers) if round_ % 2 == 0 else list(reversed(servers))
            for name in names:
                windows.setdefault((load, name), []).append(
                    _window(measure, servers[name], seconds)
                )
    return windows


def alerts(root, after=0, wait=0):
    """The alerts (firings) `root` holds past id `after`; with `wait`, long-polls for one."""
    api = JsonConnection(root)
    try:
        return api.get(f"/api/v1/alerts?after={after}&limit=100&wait={wait}")["alerts"]
    finally:
        api.close()


def check_rules_live(root, timeout=30):
    """Raise unless no rule fired during the loads and one fires now: a loss of 100 posted
    to a fresh run crosses a quiet rule's `above 10`."""
    fired = alerts(root)
    if fired:
        names = sorted({alert["rule_name"] for alert in fired})
        raise RuntimeError(f"rules fired during the ingest loads: {', '.join(names)}")
    api = CallboardApi(root)
    try:
        run_id = api.create_run("rules-live", project=PROJECT)
        event = epoch_event(api.next_seq(run_id), 0)
        event["metrics"]["loss"] = 100.0
        api.post_events(run_id, [event])
    finally:
        api.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(alert["run"]["id"] == run_id for alert in alerts(root, wait=5)):
            return
    raise RuntimeError(f"no rule fired within {timeout} s on a loss of 100")


class WebhookReceiver:
    """A real HTTP receiver on 127.0.0.1 (threads of this process): `arrivals[run id]` is when
    the first webhook about that run arrived (`time.perf_counter()`), `posts` counts all."""

    def __init__(self):
        self.arrivals = {}
        self.posts = 0
        self.arrived = threading.Condition()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, run_id, timeout=10):
        """When the webhook about `run_id` arrived, waiting up to `timeout` s (None: not yet)."""
        with self.arrived:
            self.arrived.wait_for(lambda: run_id in self.arrivals, timeout)
            return self.arrivals.get(run_id)

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                at = time.perf_counter()
                run_id = json.loads(body)["run"]["id"]
                with receiver.arrived:
                    receiver.posts += 1
                    receiver.arrivals.setdefault(run_id, at)
                    receiver.arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        return Handler


def firing_rule(url):
    return {
        "name": f"loss above {FIRING_THRESHOLD:g}",
        "project": PROJECT,
        "condition": {"kind": "above", "metric": "loss", "value": FIRING_THRESHOLD},
        "actions": [{"kind": "webhook", "url": url, "secret": "s3cret"}],
    }


def firing_latencies(root, receiver, firings):
    """Seconds from an epoch's POST answered (stored) to its rule's webhook arriving, each
    on a fresh run whose previous epoch was under the threshold."""
    api = CallboardApi(root)
    latencies = []
    try:
        for index in range(WARM_FIRINGS + firings):
            run_id = api.create_run(f"fire-{index}", project=PROJECT)
            api.log_epoch(run_id, 0)
            event = epoch_event(api.next_seq(run_id), 1)
            event["metrics"]["loss"] = FIRING_VALUE
            api.post_events(run_id, [event])
            stored = time.perf_counter()
            arrived = receiver.wait_for(run_id)
            if arrived is None:
                raise RuntimeError(f"no webhook for run {run_id} within 10 s of its epoch")
            if index >= WARM_FIRINGS:
                latencies.append(arrived - stored)
    finally:
        api.close()
    return latencies


def _ingest_row(load, without, with_rules):
    rate = statistics.median(rate for rate, _ in without)
    rules_rate = statistics.median(rate for rate, _ in with_rules)
    ratio = rules_rate / rate
    cpu = statistics.median(cpu for _, cpu in without)
    rules_cpu = statistics.median(cpu for _, cpu in with_rules)
    return {
        "load (epoch posts)": load,
        "no rules": f"{rate:,.0f} req/s",
        "20 rules": f"{rules_rate:,.0f} req/s",
        "ratio": f"{ratio:.0%}",
        "target": f"≥ {RATE_TARGET:.0%}",
        "holds": "yes" if ratio >= RATE_TARGET else "no",
        "server CPU µs/request": f"{cpu:,.0f} vs {rules_cpu:,.0f}",
    }


def _firing_row(latencies):
    p95 = percentile(latencies, 95)
    return {
        "measure": f"epoch stored → webhook received ({len(latencies)} firings)",
        "p50 ms": percentile(latencies, 50) * 1000,
        "p95 ms": p95 * 1000,
        "max ms": max(latencies) * 1000,
        "target p95": f"≤ {FIRING_TARGET * 1000:,.0f} ms",
        "holds": "yes" if p95 <= FIRING_TARGET else "no",
    }


def run(quick=False):
    seconds, rounds, firings = (1, 2, 10) if quick else (3, 6, 200)
    rules = quiet_rules()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        with (
            rules_server(f"sqlite:///{tmp}/none.db", []) as bare,
            rules_server(f"sqlite:///{tmp}/rules.db", rules) as watched,
        ):
            windows = ingest_in_turns({"none": bare, "rules": watched}, seconds, rounds)
            check_rules_live(watched.root)
        receiver = WebhookReceiver()
        try:
            with rules_server(
                f"sqlite:///{tmp}/firing.db", [*rules, firing_rule(receiver.url)]
            ) as s:
                latencies = firing_latencies(s.root, receiver, firings)
        finally:
            receiver.close()
    loads = dict.fromkeys(load for load, _ in windows)
    rows = [_ingest_row(load, windows[load, "none"], windows[load, "rules"]) for load in loads]
    kinds = sorted({rule["condition"]["kind"] for rule in rules})
    return Report(
        title="Rules: ingest with 20 active rules, and a firing's webhook (Callboard, SQLite)",
        rows=rows,
        notes=[
            f"20 rules ({', '.join(kinds)}; webhook and command actions) on every run of the "
            "project the loads post to, watching the posted metrics; none fires on them (checked "
            "after the loads, and that a loss of 100 then fires one).",
            f"Two fresh `callboard serve` processes (SQLite), one without rules, measured in "
            f"turns: {rounds} windows of {seconds} s per server and load, who goes first "
            "alternating; medians shown. Each request is one `epoch_end` event of 4 metrics "
            "committed before the answer; clients as in the ingest table (one run each). "
            "The loads leave their runs running, so the servers mark runs lost after a day "
            "(`CALLBOARD_LOST_AFTER_SECONDS`), not 60 s.",
            "Server CPU µs/request: the server process's CPU time (all threads) from a window's "
            "start until it is quiet again (the rule engine judges off the request path, after "
            "the answer) / the window's requests; median, without vs with rules.",
        ],
        tables=[
            (
                f"Firing latency: a third fresh server with the same 20 rules and `loss above "
                f"{FIRING_THRESHOLD:g}` posting a signed webhook to a receiver thread of the "
                f"benchmark; per fresh run an epoch under the threshold, then one at "
                f"{FIRING_VALUE:g}, timed from that POST's answer (the event stored) to the "
                f"webhook's arrival; {WARM_FIRINGS} firings first not counted; the receiver got "
                f"{receiver.posts} posts for {WARM_FIRINGS + firings} firings.",
                [_firing_row(latencies)],
            )
        ],
    )
