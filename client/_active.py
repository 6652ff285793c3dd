"""Which Callboard run a Keras model is reporting to, so callbacks find it without wiring."""

import weakref

_runs_by_model = weakref.WeakKeyDictionary()


def attach_run(model, run):
    """Make `run` the current run of `model` (done by `RemoteMonitor` at train begin)."""
    _runs_by_model[model] = run


def active_run(model):
    """Return the run `model` is reporting to, or None when no RemoteMonitor set one."""
    if model is None:
        return None
    try:
        return _runs_by_model.get(model)
    except TypeError:
        return None
