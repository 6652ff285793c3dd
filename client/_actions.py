"""How Callboard's acting Keras callbacks report what they did to the model's run."""

import contextlib
import warnings

import keras
import numpy as np

from ._active import active_run
from ._values import encode_number


def as_number(value):
    """A Python, NumPy or tensor scalar as a JSON-safe float ("NaN", "Infinity"), or None."""
    if value is None:
        return None
    try:
        return encode_number(float(keras.ops.convert_to_numpy(value)))
    except (TypeError, ValueError):  # not a scalar
        return None


def report(model, kind, data, epoch=None):
    """Send event `kind` to `model`'s run; return that run, or None when there is none."""
    run = active_run(model)
    if run is not None:
        run.log_event(kind, data=data, epoch=epoch)
    return run


@contextlib.contextmanager
def reporting(callback):
    """Turn a failure to report `callback`'s action into a warning: training goes on."""
    try:
        yield
    except Exception as exc:  # reporting must never stop training
        warnings.warn(
            f"Callboard could not report what {type(callback).__name__} did: {exc!r}",
            RuntimeWarning,
            stacklevel=3,
        )


def _readable_rate(value):
    """The rate as its shortest decimal in its own dtype: float32 0.01 reads 0.01."""
    return float(str(np.asarray(value)[()]))


def learning_rates(model):
    """`{optimizer name: learning rate}` of `model` (key None for a single optimizer)."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return {}
    if hasattr(optimizer, "optimizers"):
        optimizers = {opt.name: opt for opt in optimizer.optimizers}
    else:
        optimizers = {None: optimizer}
    return {
        name: _readable_rate(keras.ops.convert_to_numpy(opt.learning_rate))
        for name, opt in optimizers.items()
    }


def _report_rate_changes(model, before, epoch):
    for name, new in learning_rates(model).items():
        old = before.get(name)
        if old is None or old == new:
            continue
        data = {"old": encode_number(old), "new": encode_number(new)}
        if name is not None:
            data["optimizer"] = name
        report(model, "lr_changed", data, epoch=epoch)


@contextlib.contextmanager
def rate_changes_reported(callback, epoch):
    """Send an "lr_changed" event for each learning rate the block changes.

    With several optimizers, each event's data also names its `optimizer`.
    """
    before = None
    if active_run(callback.model) is not None:
        with reporting(callback):
            before = learning_rates(callback.model)
    yield
    if before is not None:
        with reporting(callback):
            _report_rate_changes(callback.model, before, epoch)
