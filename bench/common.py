"""Shared by the benchmarks: Callboard's REST calls, percentiles, process memory."""

import http.client
import json
import math
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import orjson

EPOCH_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


class JsonConnection:
    """A lean keep-alive HTTP/1.1 JSON client, the load generator for both systems.

    httpx spends about 0.6 ms of client CPU per request on this kind of machine,
    which would cap a sequential loop near 1,000 requests/s whatever the server;
    `http.client` spends about a fifth of that, and orjson encodes a 5,000-event
    batch (1 MB) in a tenth of the standard library's time, so the figures
    measure the servers rather than the load generator.
    """

    def __init__(self, root, timeout=120):
        parts = urlsplit(root)
        self.host, self.port = parts.hostname, parts.port
        self.timeout = timeout
        self.connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None):
        payload = None if body is None else orjson.dumps(body)
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            self.connection.request(method, path, payload, headers)
            response = self.connection.getresponse()
        except (http.client.HTTPException, OSError):
            self.connection.close()  # a dropped keep-alive connection: reconnect once
            self.connection.request(method, path, payload, headers)
            response = self.connection.getresponse()
        data = response.read()
        if response.status >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {response.status}: {data[:300]!r}")
        return _loads(data) if data else None

    def post(self, path, body):
        return self.request("POST", path, body)

    def get(self, path):
        return self.request("GET", path)

    def close(self):
        self.connection.close()


def _loads(data):
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # NaN or Infinity tokens, which orjson refuses
        return json.loads(data)


class CallboardApi:
    """The few Callboard REST calls the benchmarks need (the peer's twin: `MlflowApi`)."""

    def __init__(self, root):
        self.root = root
        self.http = JsonConnection(root)
        self._seq = {}

    def create_run(self, name, project="bench"):
        return self.http.post("/api/v1/runs", {"name": name, "project": project})["id"]

    def post_events(self, run_id, events):
        return self.http.post(f"/api/v1/runs/{run_id}/events", {"events": events})

    def next_seq(self, run_id, count=1):
        first = self._seq.get(run_id, 0) + 1
        self._seq[run_id] = first + count - 1
        return first

    def log_epoch(self, run_id, epoch, keys=EPOCH_KEYS):
        """One `epoch_end` event with `len(keys)` metrics: what RemoteMonitor sends per epoch."""
        return self.post_events(run_id, [epoch_event(self.next_seq(run_id), epoch, keys)])

    def log_steps(self, run_id, first_step, count, keys=EPOCH_KEYS):
        """`count` `metrics` events (one per step, `len(keys)` metrics each) in one request."""
        seq = self.next_seq(run_id, count)
        now = time.time()
        events = [
            {
                "seq": seq + i,
                "kind": "metrics",
                "step": first_step + i,
                "time": now,
                "metrics": {key: 1.0 / (first_step + i + 1) for key in keys},
            }
            for i in range(count)
        ]
        return self.post_events(run_id, events)

    def close(self):
        self.http.close()


def epoch_event(seq, epoch, keys=EPOCH_KEYS):
    return {
        "seq": seq,
        "kind": "epoch_end",
        "epoch": epoch,
        "time": time.time(),
        "metrics": {key: 0.5 / (epoch + 1) for key in keys},
    }


def percentile(samples, q):
    """The `q`-th percentile (0-100) of `samples`, nearest-rank."""
    ordered = sorted(samples)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def process_tree(pid):
    """`pid` and all its descendants (Linux /proc)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def rss_mib(*pids):
    """Resident memory (VmRSS) of `pids`, summed, in MiB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def pss_mib(*pids):
    """Proportional set size of `pids`, summed, in MiB: shared pages counted once overall."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def cpu_count():
    return os.cpu_count() or 1
