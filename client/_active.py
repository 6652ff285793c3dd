"""Which Callboard run a Keras model is reporting to, so callbacks find it without wiring."""

import weakref

_runs_by_model = weakref.WeakKeyDictionary()


def attach_run(model, run):
    """Make `run` the current run of `model` (done by `RemoteMonitor` at train begin)."""
    _runs_by_model[model] = run


def active_run(model):
    """Return the open run `model` is reporting to, or None when there is none."""
    if model is None:
        return None
    try:
        run = _runs_by_model.get(model)
    except TypeError:
        return None
    return None if run is None or run.finished else run


_resume_uids = weakref.WeakKeyDictionary()


def set_resume_uid(model, uid):
    """Ask the next `RemoteMonitor` of `model` to continue run `uid` (None forgets the hint).

    `BackupAndRestore` sets this in `set_model`, before any `on_train_begin`, when
    training resumes from a backup of a run that reported to Callboard.
    """
    try:
        if uid is None:
            _resume_uids.pop(model, None)
        else:
            _resume_uids[model] = uid
    except TypeError:
        pass


def resume_uid(model):
    """Return the uid of the run that training of `model` resumes, or None."""
    if model is None:
        return None
    try:
        return _resume_uids.get(model)
    except TypeError:
        return None
