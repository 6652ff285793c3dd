"""A token goes only to the server it was given for: spool replays by a run and by `sync`."""

import os
import threading
import time

import pytest
from typer.testing import CliRunner

from callboard.client import Run
from callboard.client._spool import Spool, spool_files
from callboard.client.sync import SpooledForAnotherServer, TokenWithoutRoot, sync
from callboard.server.cli.main import app

from .fake_server import FakeServer, listening

IDLE = time.time() - 3600


@pytest.fixture
def two_servers():
    """Two fake Callboard servers on 127.0.0.1: `(home, other)`, each with `.root`."""
    home, other = FakeServer(), FakeServer()
    with listening(home) as home.root, listening(other) as other.root:
        yield home, other


def leave_spool(directory, root, uid, count=2):
    """A spool file a killed training left for `root`, idle for an hour."""
    spec = {"uid": uid, "name": uid, "project": "default"}
    spool = Spool(directory, uid, {"root": root, "run": spec})
    spool.append([{"seq": seq, "kind": "epoch_end", "epoch": seq} for seq in range(1, count + 1)])
    os.utime(spool.path, (IDLE, IDLE))
    return spool.path


def authorizations(server):
    return {request.headers.get("Authorization") for request in server.requests}


def wait_for_replays(deadline=10.0):
    end = time.monotonic() + deadline
    while any(t.name == "callboard-replay" for t in threading.enumerate()):
        assert time.monotonic() < end, "the idle-spool replay did not end"
        time.sleep(0.02)


def test_a_run_replays_idle_spools_of_its_own_server_only(two_servers, _spool_dir):
    home, other = two_servers
    mine = leave_spool(_spool_dir, home.root + "/", "killed-home-run")  # same server, spelt apart
    theirs = leave_spool(_spool_dir, other.root, "killed-other-run")
    with Run(root=home.root, token="home-secret", headers={"X-Team": "home-only"}) as run:
        run.log({"loss": 1.0}, epoch=0)
    deadline = time.monotonic() + 10
    while mine.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    wait_for_replays()
    assert not mine.exists()
    assert [run["uid"] for run in home.runs.values()] == [run.uid, "killed-home-run"]
    assert authorizations(home) == {"Bearer home-secret"}
    assert other.requests == []  # neither its spool file nor, above all, home's token
    assert theirs.exists()


def test_sync_with_a_token_sends_only_the_files_of_its_root(two_servers, _spool_dir):
    home, other = two_servers
    mine = leave_spool(_spool_dir, home.root, "home-run")
    theirs = leave_spool(_spool_dir, other.root, "other-run")
    results = sync(_spool_dir, root=home.root, token="home-secret")
    assert results[mine] == 2
    assert isinstance(results[theirs], SpooledForAnotherServer)
    assert authorizations(home) == {"Bearer home-secret"}
    assert other.requests == []
    assert spool_files(_spool_dir) == [theirs]


def test_sync_without_root_sends_each_file_to_its_own_server_without_a_token(
    two_servers, _spool_dir
):
    home, other = two_servers
    leave_spool(_spool_dir, home.root, "home-run")
    leave_spool(_spool_dir, other.root, "other-run")
    assert sorted(sync(_spool_dir).values()) == [2, 2]
    assert authorizations(home) == authorizations(other) == {None}
    assert len(home.stored()) == len(other.stored()) == 2


def test_sync_refuses_a_token_without_its_root(_spool_dir):
    leave_spool(_spool_dir, "http://127.0.0.1:9", "a-run")
    with pytest.raises(TokenWithoutRoot):
        sync(_spool_dir, token="secret")
    result = CliRunner().invoke(app, ["sync", "--token", "secret"], env={"CALLBOARD_ROOT": None})
    assert result.exit_code == 2
    assert "--root" in result.output
    assert len(spool_files(_spool_dir)) == 1


def test_the_cli_sends_with_the_token_only_the_runs_of_root(two_servers, _spool_dir):
    home, other = two_servers
    leave_spool(_spool_dir, home.root, "home-run")
    theirs = leave_spool(_spool_dir, other.root, "other-run")
    result = CliRunner().invoke(app, ["sync", "--root", home.root, "--token", "home-secret"])
    assert result.exit_code == 0, result.output
    assert "sent 2 events" in result.output
    assert f"callboard sync --root {other.root}" in result.output
    assert other.requests == [] and spool_files(_spool_dir) == [theirs]


def test_spool_files_never_hold_the_token_or_headers(_spool_dir):
    server = FakeServer()
    server.down = True
    with Run(
        root="http://callboard.test",
        token="never-on-disk",
        headers={"X-Api-Key": "nor-this"},
        client=server.client(),
        flush_timeout=1,
    ) as run:
        run.log({"loss": 1.0}, epoch=0)
    [path] = spool_files(_spool_dir)
    text = path.read_text()
    assert run.uid in text
    assert "never-on-disk" not in text and "nor-this" not in text


def test_the_cli_says_how_to_send_to_a_server_that_needs_a_token(two_servers, _spool_dir):
    home, _ = two_servers
    home.fail_next(1, status=401)
    leave_spool(_spool_dir, home.root, "home-run")
    unset = {"CALLBOARD_ROOT": None, "CALLBOARD_TOKEN": None}
    result = CliRunner().invoke(app, ["sync"], env=unset)
    assert result.exit_code == 1
    assert "callboard sync --root URL --token T" in result.output
    assert len(spool_files(_spool_dir)) == 1


def test_the_cli_names_an_unreachable_server_without_blaming_the_token(_spool_dir):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{probe.getsockname()[1]}"
    leave_spool(_spool_dir, gone, "orphan-run")
    unset = {"CALLBOARD_ROOT": None, "CALLBOARD_TOKEN": None}
    result = CliRunner().invoke(app, ["sync"], env=unset)
    assert result.exit_code == 1
    assert f"kept, not sent to {gone}" in result.output
    assert "--token" not in result.output
    assert len(spool_files(_spool_dir)) == 1


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/", True),
        ("HTTP://Example.COM", "http://example.com:80", True),
        ("https://example.com/callboard/", "https://example.com:443/callboard", True),
        ("http://127.0.0.1:8000", "http://localhost:8000", False),
        ("http://example.com", "https://example.com", False),
        ("http://example.com:8000", "http://example.com:8001", False),
        ("http://example.com/a", "http://example.com/b", False),
    ],
)
def test_same_root_compares_servers_not_spellings(first, second, same):
    from callboard.client._api import same_root

    assert same_root(first, second) is same
