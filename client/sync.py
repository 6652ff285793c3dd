"""Replaying spooled events: what a client could not deliver, sent once the server answers.

A spool file names the server it was spooled for, and goes only there. A token
(or other headers) is sent only to the server it was given for, so a file
spooled for another server is left alone rather than sent with it.
"""

import contextlib
import time

from ._api import DeliveryFailed, Rejected, ServerApi, same_root
from ._chunks import request_chunks
from ._spool import Spool, read_spool_file, read_spool_header, spool_files


class SpooledForAnotherServer(Exception):
    """The spool file belongs to another server than the one asked to take it."""

    def __init__(self, root):
        super().__init__(f"spooled for {root}: `callboard sync --root {root}` sends it")
        self.root = root


class TokenWithoutRoot(ValueError):
    """A token (or headers) was given without the server it belongs to."""


def replay_spool_file(path, api, batch_size=500):
    """Send one spool file's run and events through `api`; return how many were delivered.

    Delivered events leave the file (and an emptied file is removed). Raises
    `SpooledForAnotherServer` when the file is not `api`'s server's, and
    `DeliveryFailed` when the server can't be reached.
    """
    header, events = read_spool_file(path)
    if header is None:
        return 0
    if not same_root(header["root"], api.root):
        raise SpooledForAnotherServer(header["root"])
    record = api.create_run(header["run"])
    delivered = 0
    try:
        for chunk in request_chunks(events, max_events=batch_size):
            api.send_events(record.id, chunk, on_refused=lambda event, exc: None)
            delivered += len(chunk)
    finally:
        Spool(path.parent, path.stem, header).discard(delivered)
    return delivered


def sync(directory=None, root=None, token=None, client=None, headers=None):
    """Replay the spool files on this machine; return `{path: delivered count or error}`.

    Without `root`, each file goes to the server it was spooled for, with no
    token. With `root`, only the files spooled for that server are sent (with
    `token` and `headers`); the others map to `SpooledForAnotherServer`.
    A token without `root` raises `TokenWithoutRoot`: it would go to every
    server named in the spool.

    Example:
        >>> sync(root="http://127.0.0.1:8000", token="...")  # doctest: +SKIP
        {PosixPath('.../3fa2....jsonl'): 120}
    """
    if (token or headers) and not root:
        raise TokenWithoutRoot(
            "a token is sent only to the server it was given for: name that server with --root"
        )
    results = {}
    for path in spool_files(directory):
        spooled_for = (read_spool_header(path) or {}).get("root")
        if spooled_for is None:
            continue  # not a spool file, or emptied meanwhile
        if root and not same_root(spooled_for, root):
            results[path] = SpooledForAnotherServer(spooled_for)
            continue
        api = ServerApi(spooled_for, headers=headers, token=token, client=client)
        try:
            results[path] = replay_spool_file(path, api)
        except (DeliveryFailed, Rejected) as exc:
            results[path] = exc
    return results


def replay_idle_spools(directory, api, skip=None, idle_seconds=30.0):
    """Replay through `api` the spool files of `api`'s server nobody has written to for
    `idle_seconds` (left by ended processes); files of other servers stay.

    Every client does this once it reaches its server, so spooled events of a
    killed training arrive without anyone running `callboard sync`.
    """
    for path in spool_files(directory):
        try:
            idle = time.time() - path.stat().st_mtime >= idle_seconds
        except FileNotFoundError:
            continue
        if path == skip or not idle:
            continue
        if not same_root((read_spool_header(path) or {}).get("root"), api.root):
            continue
        with contextlib.suppress(DeliveryFailed, Rejected):
            replay_spool_file(path, api)
