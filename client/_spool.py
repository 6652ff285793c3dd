"""The on-disk spool: events that could not be delivered yet, one append-only file per run."""

import contextlib
import fcntl
import json
import os
import threading
from pathlib import Path


def default_spool_dir():
    """`$CALLBOARD_SPOOL_DIR`, else `~/.cache/callboard/spool`."""
    configured = os.environ.get("CALLBOARD_SPOOL_DIR")
    if configured:
        return Path(configured)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "callboard" / "spool"


class Spool:
    """Append-only JSON-lines file of one run's undelivered events.

    The first line is the run's header (server root and run spec), so any process
    on this machine can replay the file later (`callboard sync`).
    """

    def __init__(self, directory, run_uid, header):
        self.path = Path(directory) / f"{run_uid}.jsonl"
        self._header = header
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def _lock(self):
        """Exclusive across this process's threads and other processes on the machine."""
        with self._thread_lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_suffix(".lock"), "w") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
                yield

    def append(self, events):
        if not events:
            return
        with self._lock():
            new_file = not self.path.exists()
            with open(self.path, "a", encoding="utf-8") as f:
                if new_file:
                    f.write(json.dumps({"header": self._header}) + "\n")
                for event in events:
                    f.write(json.dumps(event) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def __bool__(self):
        return self.path.exists()

    def read(self):
        """Return the spooled events in the order they were written."""
        with self._lock():
            return read_spool_file(self.path)[1]

    def discard(self, delivered_count):
        """Forget the first `delivered_count` events, keeping any appended since."""
        with self._lock():
            header, events = read_spool_file(self.path)
            rest = events[delivered_count:]
            if not rest:
                self.path.unlink(missing_ok=True)
                self.path.with_suffix(".lock").unlink(missing_ok=True)
                return
            tmp = self.path.with_suffix(".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(json.dumps({"header": header}) + "\n")
                for event in rest:
                    f.write(json.dumps(event) + "\n")
            os.replace(tmp, self.path)


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


def spool_files(directory=None):
    """The spool files waiting in `directory` (default: the machine's spool)."""
    return sorted(Path(directory or default_spool_dir()).glob("*.jsonl"))
