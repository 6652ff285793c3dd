"""`callboard runs|stop|export|token list|token revoke` ask a real server over HTTP."""

import csv
import http.server
import io
import json
import subprocess
import sys
import threading

import pytest

from callboard.client._api import ServerApi
from tests.server.helpers import create_run, epoch_event, post_events
from tests.server.test_export import assert_neutralised, hostile_run
from tests.server_process import free_port

from .conftest import invoke

REMOTE_COMMANDS = [
    ["runs"],
    ["stop", "1"],
    ["export", "1"],
    ["token", "list"],
    ["token", "revoke", "1"],
]


def end_run(client, run_id, status="finished"):
    post_events(client, run_id, {"seq": 99, "kind": "train_end", "data": {"status": status}})


def table_rows(text):
    """`{second column: cells}` of the body rows of a table the command printed."""
    rows = (line.split("│") for line in text.splitlines() if line.startswith("│"))
    return {cells[2].strip(): cells for cells in rows if cells[2].strip()}


def listed_names(result):
    assert result.exit_code == 0, result.output
    return set(table_rows(result.stdout))


def run_messages(response):
    """The `run` messages (the run's summary) of a run's live stream, as they arrive."""
    event = None
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line.partition(":")[2].strip()
        elif line.startswith("data:") and event == "run":
            yield json.loads(line.partition(":")[2])
        elif not line:
            event = None


def one_line_on_stderr(result):
    """The single line a failed command printed (nothing on stdout, no traceback)."""
    assert result.exit_code == 1, result.output
    assert not result.stdout, result.stdout
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- runs ---------------------------------------------------------------------------------


def test_runs_lists_runs_filtered_by_project_status_and_name(board):
    with board.client() as client:
        first = create_run(client, "lister-a", project="listing")
        post_events(client, first, epoch_event(1, 0, loss=0.5, acc="NaN"))
        end_run(client, first)
        create_run(client, "lister-b", project="listing")
        create_run(client, "lister-c", project="elsewhere")

    assert listed_names(board.call("runs", "--project", "listing", role="read")) == {
        "lister-a",
        "lister-b",
    }
    finished = board.call("runs", "--project", "listing", "--status", "finished", role="read")
    assert listed_names(finished) == {"lister-a"}
    assert "loss=0.5" in finished.stdout and "finished" in finished.stdout
    assert listed_names(board.call("runs", "--name", "lister-c", role="read")) == {"lister-c"}
    newest = board.call("runs", "--project", "listing", "--limit", "1", role="read")
    assert listed_names(newest) == {"lister-b"} and "1 of 2 runs" in newest.stdout
    bad = board.call("runs", "--status", "sleeping", role="read")
    assert "status" in one_line_on_stderr(bad)


def test_names_that_look_like_markup_print_as_they_are(board):
    with board.client() as client:
        create_run(client, "[bold]odd[/bold]", project="[red]odd")
    listed = board.call("runs", "--project", "[red]odd", role="read")
    assert listed_names(listed) == {"[bold]odd[/bold]"} and "[red]odd" in listed.stdout
    stopped = board.call("stop", "[bold]odd[/bold]", role="control")
    assert stopped.exit_code == 0, stopped.output
    assert "([bold]odd[/bold])." in stopped.stdout


def test_root_and_token_come_from_the_environment(board):
    with board.client() as client:
        create_run(client, "from-env", project="env")
    environment = {"CALLBOARD_ROOT": board.root, "CALLBOARD_TOKEN": board.tokens["read"]}
    result = invoke("runs", "--project", "env", env=environment)
    assert listed_names(result) == {"from-env"}


# --- stop ---------------------------------------------------------------------------------


def test_stop_by_name_is_stored_and_streamed_live(board):
    with board.client() as client:
        run_id = create_run(client, "stoppable", project="stopping")
    training = ServerApi(board.root, token=board.tokens["ingest"])
    path = f"/api/v1/runs/{run_id}/stream"
    with board.client("read") as reader, reader.stream("GET", path) as stream:
        updates = run_messages(stream)
        assert next(updates)["stop"] == "none"
        stopped = board.call("stop", "stoppable", "--reason", "from cli", role="control")
        assert stopped.exit_code == 0, stopped.output
        assert f"Stop requested for run {run_id} (stoppable)" in stopped.stdout
        assert next(updates)["stop"] == "requested"  # the dashboard sees it live
    control = training.control(run_id)  # and so does the training's client
    assert control.state == "requested" and control.reason == "from cli"
    training.close()


def test_stop_by_name_stops_the_live_run_not_a_newer_ended_one(board):
    # A newer run of the same name that had ended (a quick retry, a replayed spool)
    # made `callboard stop NAME` answer "already ended" while the training ran on.
    with board.client() as client:
        live, ended = (create_run(client, "twin", project="twins") for _ in range(2))
        end_run(client, ended)
    stopped = board.call("stop", "twin", role="control")
    assert stopped.exit_code == 0, stopped.output
    assert f"Stop requested for run {live} " in stopped.stdout


def test_stop_by_name_finds_a_paused_run(board):
    # `paused` was not among the client's live statuses: the newer ended run was taken.
    with board.client() as client:
        paused = create_run(client, "resting", project="twins")
    controller = ServerApi(board.root, token=board.tokens["control"])
    training = ServerApi(board.root, token=board.tokens["ingest"])
    pause = controller.issue_command(paused, "pause")
    training.report_outcome(paused, pause.id, "applied")
    assert controller.read_run(paused).status == "paused"
    with board.client() as client:
        end_run(client, create_run(client, "resting", project="twins"))
    assert controller.find_run("resting", project="twins", live_first=True).id == paused
    stopped = board.call("stop", "resting", role="control")
    assert stopped.exit_code == 0, stopped.output
    assert f"Stop requested for run {paused} " in stopped.stdout
    controller.close()
    training.close()


def test_stop_names_an_ended_or_missing_run_in_one_line(board):
    with board.client() as client:
        ended = create_run(client, "done-already", project="stopping")
        end_run(client, ended)
    refused = one_line_on_stderr(board.call("stop", str(ended), role="control"))
    assert "already ended" in refused and "finished" in refused
    missing = one_line_on_stderr(board.call("stop", "no-such-run", role="control"))
    assert "No run 'no-such-run'" in missing
    elsewhere = board.call("stop", "done-already", "--project", "nowhere", role="control")
    assert "No run 'done-already' in project 'nowhere'" in one_line_on_stderr(elsewhere)


def test_a_read_token_cannot_stop_a_run(board):
    with board.client() as client:
        run_id = create_run(client, "guarded", project="stopping")
    refused = one_line_on_stderr(board.call("stop", "guarded", role="read"))
    assert refused == "Not allowed: role 'read' cannot do this (needs control)."
    with board.client("read") as reader:
        assert reader.get(f"/api/v1/runs/{run_id}").json()["stop"] == "none"


# --- export -------------------------------------------------------------------------------


def test_export_writes_the_epochs_as_csv(board, tmp_path):
    with board.client() as client:
        run_id = create_run(client, "exported", project="exports")
        post_events(
            client,
            run_id,
            epoch_event(1, 0, loss=0.5, acc="NaN"),
            epoch_event(2, 1, loss=0.25, acc=0.9),
        )
    exported = board.call("export", str(run_id), "--csv", role="read")
    assert exported.exit_code == 0, exported.output
    rows = list(csv.reader(io.StringIO(exported.stdout)))
    assert rows == [["epoch", "acc", "loss"], ["0", "nan", "0.5"], ["1", "0.9", "0.25"]]
    target = tmp_path / "exported.csv"
    by_name = board.call("export", "exported", "-o", str(target), role="read")
    assert by_name.exit_code == 0, by_name.output
    assert target.read_text() == exported.stdout


def test_export_neutralises_formulas_too(board):
    with board.client() as client:
        run_id = hostile_run(client)
    result = board.call("export", str(run_id), role="read")
    assert result.exit_code == 0, result.output
    assert_neutralised(result.stdout)


# --- tokens -------------------------------------------------------------------------------


def test_token_list_and_revoke_by_id_or_name_with_an_admin_token(board):
    with board.client("admin") as admin:
        made = {
            name: admin.post("/api/v1/tokens", json={"name": name, "role": "read"}).json()
            for name in ("laptop", "gpu-box")
        }
    by_id = board.call("token", "revoke", str(made["gpu-box"]["id"]))
    assert by_id.exit_code == 0, by_id.output
    assert f"Revoked token {made['gpu-box']['id']} ('gpu-box', read)" in by_id.stdout
    by_name = board.call("token", "revoke", "laptop")
    assert by_name.exit_code == 0, by_name.output
    assert f"Revoked token {made['laptop']['id']} ('laptop'" in by_name.stdout
    listed = board.call("token", "list")
    assert listed.exit_code == 0, listed.output
    rows = table_rows(listed.stdout)
    assert set(rows) == {"ingest", "read", "control", "admin", "laptop", "gpu-box"}
    assert {name for name, cells in rows.items() if "yes" in cells[-2]} == {"laptop", "gpu-box"}
    assert all(made[name]["token"] not in listed.stdout for name in made)
    again = board.call("token", "revoke", "gpu-box")  # it said "Revoked token N" again
    assert again.exit_code == 0, again.output
    assert "('gpu-box', read) was revoked already" in again.stdout
    missing = board.call("token", "revoke", "7000")
    assert "No token with id or name '7000'" in one_line_on_stderr(missing)
    revoked = invoke("runs", "--root", board.root, "--token", made["laptop"]["token"])
    assert "--token" in one_line_on_stderr(revoked)  # the server refuses it at once


def test_only_an_admin_token_lists_tokens(board):
    refused = one_line_on_stderr(board.call("token", "list", role="control"))
    assert refused.startswith("Not allowed:") and "admin" in refused


# --- no server, no token: one line, exit code 1, no database made ------------------------


@pytest.mark.parametrize("args", REMOTE_COMMANDS, ids=" ".join)
def test_no_server_is_one_line_and_no_database_appears(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    root = f"http://127.0.0.1:{free_port()}"
    line = one_line_on_stderr(invoke(*args, "--root", root))
    assert line.startswith(f"No Callboard server at {root}")
    assert "callboard serve" in line and "--root" in line
    assert list(tmp_path.iterdir()) == [], "the command left a file behind"


@pytest.mark.parametrize("args", REMOTE_COMMANDS, ids=" ".join)
def test_no_token_is_one_line_naming_the_option_and_the_variable(board, args):
    line = one_line_on_stderr(board.call(*args, role=None))
    assert "--token" in line and "CALLBOARD_TOKEN" in line


def test_commands_against_a_server_leave_no_database_in_the_folder(board, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in REMOTE_COMMANDS:  # a read token: nothing changes, every command is answered
        board.call(*args, role="read")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("root", ["127.0.0.1:8000", "http://[::1", "ftp://127.0.0.1"])
def test_a_root_that_is_no_http_url_is_one_line(root):
    line = one_line_on_stderr(invoke("runs", "--root", root))
    assert line.startswith(f"No Callboard server at {root} (") and "--root" in line


def test_no_server_in_a_real_process_prints_no_traceback(tmp_path):
    root = f"http://127.0.0.1:{free_port()}"
    finished = subprocess.run(
        [sys.executable, "-m", "callboard.server", "stop", "demo", "--root", root],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 1
    assert finished.stdout == ""
    assert len(finished.stderr.strip().splitlines()) == 1, finished.stderr
    assert f"No Callboard server at {root}" in finished.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args", [[], ["runs"], ["stop"], ["export"], ["token", "list"], ["token", "revoke"]], ids=str
)
def test_help_names_root_token_and_their_variables(args):
    shown = invoke(*args, "--help", env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    for words in ("--root", "--token", "CALLBOARD_ROOT", "CALLBOARD_TOKEN"):
        assert words in shown.stdout, (args, words)


class NotCallboard(http.server.BaseHTTPRequestHandler):
    """Another web server on the port: it answers every request with a page."""

    def do_GET(self):
        body = b"<html>hello</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_another_web_server_at_root_is_one_line(tmp_path):
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotCallboard) as other:
        threading.Thread(target=other.serve_forever, daemon=True).start()
        root = f"http://127.0.0.1:{other.server_address[1]}"
        line = one_line_on_stderr(invoke("runs", "--root", root))
        other.shutdown()
    assert line == f"{root} answered 200 without JSON: not a Callboard server? Check --root."


class OtherJsonService(NotCallboard):
    """Another service on the port answering JSON of its own shape."""

    def do_GET(self):
        body = b'{"runs": "not a list", "hello": "world"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_another_json_service_at_root_is_one_line(tmp_path):
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), OtherJsonService) as other:
        threading.Thread(target=other.serve_forever, daemon=True).start()
        root = f"http://127.0.0.1:{other.server_address[1]}"
        line = one_line_on_stderr(invoke("runs", "--root", root))
        other.shutdown()
    assert line == (
        f"{root} answered in a shape this Callboard does not know "
        "(RunsPage without total, limit, offset): is --root right?"
    )


class NotCallboardMissing(NotCallboard):
    """Another web server that has no such page: an HTML 404."""

    def do_GET(self):
        body = b"<!DOCTYPE HTML><html><title>404 Not Found</title></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_another_web_servers_error_page_is_one_line_not_its_html():
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotCallboardMissing) as other:
        threading.Thread(target=other.serve_forever, daemon=True).start()
        root = f"http://127.0.0.1:{other.server_address[1]}"
        line = one_line_on_stderr(invoke("runs", "--root", root))
        other.shutdown()
    assert line == (
        f"{root} answered 404 without Callboard's JSON: not a Callboard server? Check --root."
    )


@pytest.mark.parametrize("token", ["héllo", "two words", "line\nbreak"])
def test_a_token_that_cannot_be_one_is_one_line(board, token):
    result = invoke("runs", "--root", board.root, "--token", token)
    line = one_line_on_stderr(result)
    assert line == "--token is not a Callboard token: tokens are printable ASCII, without spaces."


def test_export_to_a_path_that_cannot_be_written_is_one_line(board, tmp_path):
    with board.client() as client:
        run_id = create_run(client, "unwritable", project="exports")
    for target in (tmp_path, tmp_path / "no-such-folder" / "run.csv"):
        line = one_line_on_stderr(board.call("export", str(run_id), "-o", str(target), role="read"))
        assert line.startswith(f"Could not write {target}: "), line
