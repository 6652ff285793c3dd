"""Ends open runs when the process dies: an uncaught exception marks them `failed`.

Ctrl-C (`KeyboardInterrupt`) is a person stopping the training, not a failure:
it marks them `stopped`.

Keras calls no callback when an exception escapes `fit()`, so open runs are
closed from `sys.excepthook` (with the error) and, failing that, at exit. At
exit it also gives senders still delivering a run's last events (a slow server
at `finish()`) a short grace, unless their request looks hung.
"""

import atexit
import contextlib
import sys
import threading
import weakref

EXIT_GRACE = 2.0  # most seconds the process waits at exit for last events in flight

_open_runs = weakref.WeakSet()
_lingering = weakref.WeakSet()
_lock = threading.Lock()
_installed = False


def ending_of(exc_type, exc):
    """`(status, error)` for a run ended by exception `exc`.

    Example:
        >>> ending_of(KeyboardInterrupt, KeyboardInterrupt())
        ('stopped', 'interrupted (KeyboardInterrupt, Ctrl-C)')
        >>> ending_of(ValueError, ValueError("bad shape"))
        ('failed', 'ValueError: bad shape')
    """
    if issubclass(exc_type, KeyboardInterrupt):
        return "stopped", "interrupted (KeyboardInterrupt, Ctrl-C)"
    return "failed", f"{exc_type.__name__}: {exc}" if str(exc) else exc_type.__name__


def _finish_all(status, error):
    for run in list(_open_runs):
        with contextlib.suppress(Exception):  # never let our cleanup hide the user's error
            run.finish(status, error=error)


def _install():
    global _installed
    previous_hook = sys.excepthook

    def excepthook(exc_type, exc, tb):
        _finish_all(*ending_of(exc_type, exc))
        previous_hook(exc_type, exc, tb)

    sys.excepthook = excepthook
    atexit.register(_wait_for_lingering)  # atexit runs last-in first: after _finish_all
    atexit.register(_finish_all, "failed", "the process exited before the run finished")
    _installed = True


def _wait_for_lingering():
    for sender in list(_lingering):
        with contextlib.suppress(Exception):
            sender.wait_at_exit(EXIT_GRACE)


def guard(run):
    """Close `run` as failed if the process dies before `run.finish()`."""
    with _lock:
        if not _installed:
            _install()
        _open_runs.add(run)


def linger(sender):
    """`sender` goes on delivering after its run finished; give it a grace at exit."""
    with _lock:
        if not _installed:
            _install()
        _lingering.add(sender)


def release(run):
    """`run` finished normally; stop guarding it."""
    _open_runs.discard(run)
