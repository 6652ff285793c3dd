"""`callboard demo`: trains until someone presses Stop; `--exit --epochs N` (CI) ends by itself.

The demo once trained 30 epochs in 25 s and ended before a newcomer had opened its page.
"""

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from callboard.server.main import create_app
from callboard.server.settings import Settings

pytest.importorskip("keras")

CALLBOARD = Path(sys.executable).parent / "callboard"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_demo(tmp_path, *args):
    """Start `callboard demo --exit ...` as .ci/run does; return (its root, the process)."""
    port = free_port()
    argv = ["demo", "--exit", "--port", str(port), "--db", f"sqlite:///{tmp_path / 'demo.db'}"]
    process = subprocess.Popen(
        [str(CALLBOARD), *argv, *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return f"http://127.0.0.1:{port}", process


def ended(process, timeout):
    """`(stdout, stderr)` once `process` has exited (killed after `timeout` seconds)."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"the demo did not end:\n{out}\n{err}") from None


def wait_for_demo_run(root, process, epochs_done, deadline_seconds=120):
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the demo ended on its own: {process.communicate()}"
        try:
            runs = httpx.get(f"{root}/api/v1/runs", params={"name": "demo"}, timeout=5).json()
        except httpx.TransportError:
            runs = {"runs": []}
        if runs["runs"] and runs["runs"][0].get("epochs_done", 0) >= epochs_done:
            return runs["runs"][0]["id"]
        time.sleep(0.2)
    raise AssertionError(f"the demo run did not reach {epochs_done} epochs in time")


def test_demo_trains_until_stopped(tmp_path):
    root, process = start_demo(tmp_path)
    run_id = wait_for_demo_run(root, process, epochs_done=2)
    run = httpx.get(f"{root}/api/v1/runs/{run_id}", timeout=5).json()
    assert run["params"]["epochs"] >= 10_000, "the demo plans a fixed, short training"
    stop = subprocess.run(  # as the demo says: `callboard stop demo --root ROOT`
        [str(CALLBOARD), "stop", "demo", "--root", root],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert f"Stop requested for run {run_id} (demo)" in stop.stdout
    out, err = ended(process, timeout=120)
    assert process.returncode == 0, out + err
    assert "until you stop it" in out and "press Stop" in out
    assert f"`callboard stop demo --root {root}`" in out
    assert f"database: SQLite file {tmp_path / 'demo.db'} (new)" in err
    assert stored_run(tmp_path, run_id)["status"] == "stopped"


def stored_run(tmp_path, run_id):
    """The run as the demo's database keeps it, once the demo's server has gone."""
    with TestClient(create_app(Settings(database_url=f"sqlite:///{tmp_path / 'demo.db'}"))) as api:
        return api.get(f"/api/v1/runs/{run_id}").json()


def test_demo_with_epochs_and_exit_ends_by_itself(tmp_path):
    root, process = start_demo(tmp_path, "--epochs", "2")
    out, err = ended(process, timeout=180)
    assert process.returncode == 0, out + err
    assert "for at most 2 epochs" in out and "Training ended" in out


def test_demo_on_a_database_with_tokens_trains_with_the_token_given(tmp_path):
    # Without one it trained unrecorded (every post 401); now it asks first, and sends it.
    from callboard.server.cli.main import app

    url = f"sqlite:///{tmp_path / 'demo.db'}"
    runner = CliRunner()
    made = [
        runner.invoke(
            app, ["token", "create", name, "--role", role, "--project", "demo", "--db", url]
        )
        for name, role in (("trainer", "ingest"), ("reader", "read"))
    ]
    ingest, read = (result.stdout.split()[-1] for result in made)
    root, process = start_demo(tmp_path, "--epochs", "1", "--token", ingest)
    out, err = ended(process, timeout=180)
    assert process.returncode == 0, out + err
    assert "refused" not in err and "needs a token" not in err, err
    with TestClient(create_app(Settings(database_url=url))) as api:
        runs = api.get("/api/v1/runs", headers={"Authorization": f"Bearer {read}"}).json()
    assert [(run["name"], run["epochs_done"]) for run in runs["runs"]] == [("demo", 1)]


def test_ctrl_c_ends_the_demo_run_stopped(tmp_path):
    # The README offers Ctrl-C to end the demo; the run was left 'failed' at exit.
    root, process = start_demo(tmp_path)
    run_id = wait_for_demo_run(root, process, epochs_done=2)
    process.send_signal(signal.SIGINT)
    out, err = ended(process, timeout=120)
    assert "Training interrupted" in out, out + err
    run = stored_run(tmp_path, run_id)
    assert run["status"] == "stopped", run
