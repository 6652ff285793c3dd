"""Replaying spooled events: what a client could not deliver, sent once the server answers."""

import contextlib
import time

from ._api import DeliveryFailed, Rejected, ServerApi
from ._spool import Spool, read_spool_file, spool_files


def replay_spool_file(path, root=None, token=None, client=None, headers=None, batch_size=500):
    """Send one spool file's run and events; return how many events were delivered.

    Delivered events leave the file (and an emptied file is removed). Raises
    `DeliveryFailed` when the server can't be reached.
    """
    header, events = read_spool_file(path)
    if header is None:
        return 0
    api = ServerApi(root or header["root"], headers=headers, token=token, client=client)
    record = api.create_run(header["run"])
    delivered = 0
    try:
        for start in range(0, len(events), batch_size):
            chunk = events[start : start + batch_size]
            try:
                api.post_events(record["id"], chunk)
            except Rejected:
                for event in chunk:
                    with contextlib.suppress(Rejected):
                        api.post_events(record["id"], [event])
            delivered += len(chunk)
    finally:
        Spool(path.parent, path.stem, header).discard(delivered)
    return delivered


def sync(directory=None, root=None, token=None, client=None):
    """Replay every spool file on this machine; return `{path: delivered or error}`.

    Example:
        >>> sync(root="http://127.0.0.1:8000")  # doctest: +SKIP
        {PosixPath('.../3fa2....jsonl'): 120}
    """
    results = {}
    for path in spool_files(directory):
        try:
            results[path] = replay_spool_file(path, root=root, token=token, client=client)
        except (DeliveryFailed, Rejected) as exc:
            results[path] = exc
    return results


def replay_idle_spools(directory, skip=None, idle_seconds=30.0, headers=None):
    """Replay spool files nobody has written to for `idle_seconds` (left by ended processes).

    Every client does this once it reaches its server, so spooled events of a
    killed training arrive without anyone running `callboard sync`.
    """
    for path in spool_files(directory):
        try:
            idle = time.time() - path.stat().st_mtime >= idle_seconds
        except FileNotFoundError:
            continue
        if path != skip and idle:
            with contextlib.suppress(DeliveryFailed, Rejected):
                replay_spool_file(path, headers=headers)
