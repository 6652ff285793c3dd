"""Which Callboard run a Keras model is reporting to, so callbacks find it without wiring."""

import contextlib
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


_checkpoints_by_model = weakref.WeakKeyDictionary()


def attach_checkpoint(model, checkpoint):
    """Make `checkpoint` the Callboard `ModelCheckpoint` of `model`'s training (at `set_model`).

    `RemoteControl` saves through it when a `checkpoint` command arrives. With
    several in one `fit()`, the last one given the model is used.
    """
    with contextlib.suppress(TypeError):  # a model that cannot be weakly referenced
        _checkpoints_by_model[model] = checkpoint


def detach_checkpoint(model, checkpoint):
    """Forget `checkpoint` as `model`'s (at train end), unless another took its place."""
    with contextlib.suppress(TypeError):
        if _checkpoints_by_model.get(model) is checkpoint:
            del _checkpoints_by_model[model]


def active_checkpoint(model):
    """Return the Callboard `ModelCheckpoint` of `model`'s training, or None."""
    if model is None:
        return None
    try:
        return _checkpoints_by_model.get(model)
    except TypeError:
        return None
