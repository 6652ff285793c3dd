"""The spool: private files, a lock on every OS, and a refusing disk never raising."""

import os
import stat

import pytest

from callboard.client._spool import Spool, read_spool_file

from .scripts import run_script


def events(first, count):
    return [{"seq": seq, "kind": "epoch_end"} for seq in range(first, first + count)]


def seqs(items):
    return [item["seq"] for item in items]


@pytest.fixture
def blocked(tmp_path):
    """A spool folder path that is a file: every write to it fails."""
    path = tmp_path / "not-a-folder"
    path.write_text("")
    return path


def test_a_refused_write_keeps_the_events_in_memory(blocked):
    spool = Spool(blocked, "run", {"root": "r"})
    spool.append(events(1, 3))
    assert spool.disk_error is not None
    assert spool
    assert seqs(spool.read()) == [1, 2, 3]


def test_held_events_reach_the_file_ahead_of_later_ones(tmp_path, blocked):
    spool = Spool(blocked, "run", {"root": "r"})
    spool.append(events(1, 2))
    spool.path = tmp_path / "spool" / "run.jsonl"  # the disk takes writes again
    spool.append(events(3, 2))
    assert spool.held == []
    header, stored = read_spool_file(spool.path)
    assert header == {"root": "r"} and seqs(stored) == [1, 2, 3, 4]


def test_discard_forgets_delivered_events_from_the_file_then_from_memory(tmp_path):
    spool = Spool(tmp_path, "run", {"root": "r"})
    spool.append(events(1, 2))
    spool.held = events(3, 2)  # what a refused write left in memory
    assert seqs(spool.read()) == [1, 2, 3, 4]
    spool.discard(3)
    assert seqs(spool.read()) == [4]


def test_discard_on_a_refusing_disk_still_forgets_delivered_memory(blocked):
    spool = Spool(blocked, "run", {"root": "r"})
    spool.append(events(1, 4))
    spool.read()
    spool.discard(3)
    assert seqs(spool.read()) == [4]


def test_memory_is_bounded_dropping_the_oldest(blocked):
    spool = Spool(blocked, "run", {"root": "r"}, memory_limit=5)
    spool.append(events(1, 4))
    spool.append(events(5, 3))
    assert seqs(spool.held) == [3, 4, 5, 6, 7]
    assert spool.dropped == 2


def test_a_refused_removal_keeps_every_undelivered_event(tmp_path, monkeypatch):
    spool = Spool(tmp_path, "run", {"root": "r"})
    spool.append(events(1, 2))
    spool.held = events(3, 2)
    spool.read()

    def refuse(*args, **kwargs):
        raise OSError("read-only file system")

    monkeypatch.setattr("pathlib.Path.unlink", refuse)
    spool.discard(3)  # the file keeps 1 and 2: sent again, stored once by the server
    monkeypatch.undo()
    assert seqs(spool.read()) == [1, 2, 4]


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_spool_files_and_folders_are_private_even_under_a_permissive_umask(tmp_path):
    previous = os.umask(0)
    try:
        spool = Spool(tmp_path / "cache" / "spool", "run", {"root": "r"})
        spool.append(events(1, 3))
        with spool._lock():  # the lock file exists while the lock is held
            lock_mode = stat.S_IMODE(spool.path.with_suffix(".lock").stat().st_mode)
        spool.read()
        spool.discard(1)  # rewrites the file through a temporary one
    finally:
        os.umask(previous)
    assert stat.S_IMODE(spool.path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(spool.path.stat().st_mode) == 0o600
    assert lock_mode == 0o600
    assert seqs(read_spool_file(spool.path)[1]) == [2, 3]


WITHOUT_FCNTL = """
import sys, warnings
sys.modules["fcntl"] = None  # as on Windows: `import fcntl` fails
warnings.simplefilter("ignore")  # filelock: "only soft file lock is available"
from callboard.client import Run
from callboard.client.sync import sync
from tests.client.fake_server import FakeServer

server = FakeServer()
server.down = True
with Run(root="http://callboard.test", client=server.client(), flush_timeout=1) as run:
    run.log({"loss": 0.5}, epoch=0)
server.down = False
print(list(sync(client=server.client()).values()), [e["kind"] for e in server.stored()])
"""


def test_the_client_imports_and_spools_without_fcntl(tmp_path):
    done = run_script(WITHOUT_FCNTL, tmp_path)
    assert "[3] ['train_begin', 'epoch_end', 'train_end']" in done.stdout


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs chown")
def test_sync_sends_no_spool_file_another_user_put_in_a_shared_folder(tmp_path):
    """A file planted in a shared spool folder was sent to the server with our token."""
    import json

    import httpx

    from callboard.client.sync import sync
    from tests.client.fake_server import ingest_answer, run_answer

    root = "http://callboard.test"
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    for name in ("planted", "mine"):
        header = {"root": root, "run": {"name": name, "uid": f"{name}-uid-0001"}}
        (shared / f"{name}.jsonl").write_text(
            json.dumps({"header": header}) + "\n" + json.dumps({"seq": 1, "kind": "note"}) + "\n"
        )
    os.chown(shared / "planted.jsonl", 65534, 65534)
    created = []

    def answer(request):
        if request.url.path == "/api/v1/runs":
            spec = json.loads(request.content)
            created.append(spec["name"])
            return httpx.Response(201, json=run_answer(1, spec))
        return httpx.Response(200, json=ingest_answer(1))

    client = httpx.Client(transport=httpx.MockTransport(answer))
    results = sync(shared, root=root, token="cb_secret", client=client)
    assert created == ["mine"]
    assert [path.name for path in results] == ["mine.jsonl"]
    assert (shared / "planted.jsonl").exists()
