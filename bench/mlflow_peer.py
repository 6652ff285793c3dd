"""The peer: an MLflow tracking server on loopback (SQLite backend), driven over its REST API.

Both systems are driven the same way: HTTP/JSON over one keep-alive connection
per client (`JsonConnection`), on the same machine.
"""

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx

from tests.server_process import free_port

from .common import EPOCH_KEYS, JsonConnection

API = "/api/2.0/mlflow"
AJAX_API = "/ajax-api/2.0/mlflow"
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log-batch request


def mlflow_version():
    from importlib.metadata import version

    return version("mlflow")


class MlflowServer:
    """`mlflow server` with a SQLite backend in `folder`, in a child process.

    Example:
        ```python
        with MlflowServer(tmp) as mlflow:
            api = MlflowApi(mlflow.root)
            run_id = api.create_run(api.create_experiment("bench"))
        ```
    """

    def __init__(self, folder, port=None, workers=None):
        self.folder = Path(folder)
        self.port = port or free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.database = self.folder / "mlflow.db"
        self.process = None

    def start(self, timeout=180):
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            _mlflow_executable(),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.database}",
            "--default-artifact-root",
            str(self.folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        if self.workers:
            command += ["--workers", str(self.workers)]
        self._log = open(self.folder / "mlflow-server.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            command,
            cwd=self.folder,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{self.database}"},
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited:\n{self.log_tail()}")
            try:
                if httpx.get(self.root + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer within {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines=30):
        try:
            text = (self.folder / "mlflow-server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def pids(self):
        """The server's process and its workers."""
        from .common import process_tree

        return process_tree(self.process.pid) if self.process else []

    def stop(self):
        """SIGTERM the whole process group (uvicorn and its workers), killing after 10 s."""
        if self.process and self.process.poll() is None:
            import signal

            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


_shared = {}


@contextlib.contextmanager
def mlflow_server(folder, quick=False):
    """An MLflow server for one benchmark: a fresh one, or in quick mode one shared by all.

    Starting MLflow takes tens of seconds (its schema migrations, its job runners),
    so quick runs (CI) start it once per process and stop it at exit.
    """
    if not quick:
        with MlflowServer(folder) as server:
            yield server
        return
    if "server" not in _shared:
        shared_folder = tempfile.mkdtemp(prefix="bench-mlflow-")
        server = MlflowServer(shared_folder).start()
        _shared["server"] = server

        def stop():
            server.stop()
            shutil.rmtree(shared_folder, ignore_errors=True)

        atexit.register(stop)
    yield _shared["server"]


def _mlflow_executable():
    beside = Path(sys.executable).with_name("mlflow")
    return str(beside) if beside.exists() else (shutil.which("mlflow") or "mlflow")


class MlflowApi:
    """The few MLflow REST calls the benchmarks need (the twin of `CallboardApi`)."""

    def __init__(self, root):
        self.root = root
        self.http = JsonConnection(root)

    def create_experiment(self, name):
        return self.http.post(API + "/experiments/create", {"name": name})["experiment_id"]

    def create_run(self, experiment_id, name=None):
        body = {"experiment_id": experiment_id, "start_time": int(time.time() * 1000)}
        if name:
            body["run_name"] = name
        return self.http.post(API + "/runs/create", body)["run"]["info"]["run_id"]

    def log_batch(self, run_id, metrics):
        """`metrics`: dicts with key, value, timestamp (ms), step; at most 1000 of them."""
        return self.http.post(API + "/runs/log-batch", {"run_id": run_id, "metrics": metrics})

    def log_epoch(self, run_id, epoch, keys=EPOCH_KEYS):
        """One epoch's metrics in one log-batch: what MLflow's Keras autologging sends."""
        return self.log_batch(run_id, epoch_metrics(epoch, keys))

    def log_steps(self, run_id, first_step, count, keys=EPOCH_KEYS):
        """`count` steps of `len(keys)` metrics in one log-batch (count * len(keys) <= 1000)."""
        now = int(time.time() * 1000)
        metrics = [
            {"key": key, "value": 1.0 / (step + 1), "timestamp": now, "step": step}
            for step in range(first_step, first_step + count)
            for key in keys
        ]
        return self.log_batch(run_id, metrics)

    def get_history(self, run_id, key, max_results=None):
        """Every point of one metric, following MLflow's pagination."""
        points, token = [], None
        while True:
            params = {"run_id": run_id, "metric_key": key}
            if max_results:
                params["max_results"] = max_results
            if token:
                params["page_token"] = token
            page = self.http.get(f"{API}/metrics/get-history?{urlencode(params)}")
            points.extend(page.get("metrics", []))
            token = page.get("next_page_token")
            if not token:
                return points

    def get_history_sampled(self, run_id, key, max_results):
        """MLflow's own downsampled read (what its UI charts call): about `max_results` points."""
        params = urlencode({"run_ids": run_id, "metric_key": key, "max_results": max_results})
        return self.http.get(f"{AJAX_API}/metrics/get-history-bulk-interval?{params}")["metrics"]

    def search_runs(self, experiment_ids, max_results=100):
        body = {"experiment_ids": list(experiment_ids), "max_results": max_results}
        return self.http.post(API + "/runs/search", body).get("runs", [])

    def close(self):
        self.http.close()


def epoch_metrics(step, keys=EPOCH_KEYS):
    """One epoch's metrics in MLflow's log-batch shape."""
    now = int(time.time() * 1000)
    return [{"key": key, "value": 0.5 / (step + 1), "timestamp": now, "step": step} for key in keys]
