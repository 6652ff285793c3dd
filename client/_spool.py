"""The on-disk spool: events that could not be delivered yet, one append-only file per run.

A disk that refuses the spool (full, read-only, its folder removed) never
raises into training: the spool then holds those events in memory, up to a
limit, and writes them ahead of later ones once the disk takes them again.
Spool files are readable by their owner only (0600, in a 0700 folder): they
hold run configs and run uids. They never hold a token or other headers.
"""

import contextlib
import json
import os
import threading
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_FOLDER = 0o700


def default_spool_dir():
    """`$CALLBOARD_SPOOL_DIR`, else `~/.cache/callboard/spool`."""
    configured = os.environ.get("CALLBOARD_SPOOL_DIR")
    if configured:
        return Path(configured)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "callboard" / "spool"


def make_private_folder(folder):
    """Create `folder` (and missing parents) if absent; a folder made here is 0700."""
    folder = Path(folder)
    if folder.is_dir():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=PRIVATE_FOLDER)
        os.chmod(folder, PRIVATE_FOLDER)  # mkdir's mode is cut by the umask, never widened


def open_private(path, mode):
    """`open(path, mode)` for text, creating the file 0600 whatever the umask."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "a" else os.O_TRUNC)
    flags |= getattr(os, "O_BINARY", 0)  # Windows: newlines are the text layer's job, as in open()
    return open(os.open(path, flags, PRIVATE_FILE), mode, encoding="utf-8")


class Spool:
    """Append-only JSON-lines file of one run's undelivered events.

    The first line is the run's header (server root and run spec), so any process
    on this machine can replay the file later (`callboard sync`). Events the disk
    refused wait in memory (`held`, at most `memory_limit`: beyond it the oldest
    are dropped and counted in `dropped`); `disk_error` is the disk's last refusal.
    """

    def __init__(self, directory, run_uid, header, memory_limit=100_000):
        self.path = Path(directory) / f"{run_uid}.jsonl"
        self._header = header
        self._thread_lock = threading.RLock()  # also guards `held`
        self.memory_limit = memory_limit
        self.held = []
        self.dropped = 0
        self.disk_error = None
        self._read_from_file = 0  # how many of the events `read` returned came from the file

    @contextlib.contextmanager
    def _lock(self):
        """Exclusive across this process's threads and other processes on the machine."""
        from filelock import FileLock  # here: its import costs more than the rest of the client

        with self._thread_lock:
            make_private_folder(self.path.parent)
            with FileLock(self.path.with_suffix(".lock"), mode=PRIVATE_FILE):
                yield

    def append(self, events):
        """Add `events` after those spooled so far; never raises for the disk's sake."""
        if not events:
            return
        with self._thread_lock:
            pending = self.held + list(events)
            try:
                with self._lock():
                    new_file = not self.path.exists()
                    with open_private(self.path, "a") as f:
                        if new_file:
                            f.write(json.dumps({"header": self._header}) + "\n")
                        f.write("".join(json.dumps(event) + "\n" for event in pending))
                        f.flush()
                        os.fsync(f.fileno())
            except OSError as exc:  # a torn last line is ignored when read
                self._hold(pending, exc)
            else:
                self.held = []

    def __bool__(self):
        return bool(self.held) or self.path.exists()

    def read(self):
        """Return the spooled events in the order they were written."""
        with self._thread_lock:
            try:
                with self._lock():
                    events = read_spool_file(self.path)[1]
            except OSError as exc:
                self.disk_error = exc
                events = []
            self._read_from_file = len(events)
            return events + self.held

    def discard(self, delivered_count):
        """Forget the first `delivered_count` events, keeping any appended since.

        If the disk refuses, the delivered events stay in the file: replaying
        them again is harmless, as the server stores each (run, seq) once.
        """
        with self._thread_lock:
            try:
                self._discard_written(delivered_count)
            except OSError as exc:
                self.disk_error = exc
                self.held = self.held[max(0, delivered_count - self._read_from_file) :]

    def _discard_written(self, delivered_count):
        with self._lock():
            header, events = read_spool_file(self.path)
            rest = events[delivered_count:]
            if rest:
                tmp = self.path.with_suffix(".tmp")
                tmp.unlink(missing_ok=True)  # a leftover would keep its own mode
                with open_private(tmp, "w") as f:
                    f.write(json.dumps({"header": header}) + "\n")
                    f.write("".join(json.dumps(event) + "\n" for event in rest))
                os.replace(tmp, self.path)
            else:
                self.path.unlink(missing_ok=True)
                with contextlib.suppress(OSError):  # Windows keeps a held lock's file
                    self.path.with_suffix(".lock").unlink(missing_ok=True)
        self.held = self.held[max(0, delivered_count - len(events)) :]

    def _hold(self, events, exc):
        self.disk_error = exc
        overflow = len(events) - self.memory_limit
        if overflow > 0:
            self.dropped += overflow
            events = events[overflow:]
        self.held = events


def read_spool_file(path):
    """Return `(header, events)` of a spool file; a torn last line is ignored."""
    header, events = None, []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "header" in record:
                    header = record["header"]
                else:
                    events.append(record)
    except FileNotFoundError:
        pass
    return header, events


def read_spool_header(path):
    """The header of a spool file (its server root and run), or None."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.loads(f.readline()).get("header")
    except (OSError, ValueError, AttributeError):
        return None


def spool_files(directory=None):
    """The spool files waiting in `directory` (default: the machine's spool).

    Only this user's own files: in a folder others may write to (a shared
    `CALLBOARD_SPOOL_DIR`), a file someone else put there would otherwise be
    sent with this user's token.
    """
    paths = sorted(Path(directory or default_spool_dir()).glob("*.jsonl"))
    return [path for path in paths if _owned_by_me(path)]


def _owned_by_me(path):
    if not hasattr(os, "getuid"):  # Windows: no owner ids to compare
        return True
    try:
        return path.stat().st_uid == os.getuid()
    except OSError:
        return False
