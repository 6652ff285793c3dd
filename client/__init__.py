"""Callboard's training-side callbacks and run API.

`import callboard.client` stays light: Keras is imported only when a Keras
callback is first used.

Every callback of the Keras callbacks API is here too, as a drop-in: those that
act (ModelCheckpoint, EarlyStopping, LearningRateScheduler, ReduceLROnPlateau,
TerminateOnNaN, BackupAndRestore) are Keras's own, subclassed to report what they
did to the run of a Callboard `RemoteMonitor` in the same `callbacks` list; the
others (TensorBoard, LambdaCallback, CSVLogger, ProgbarLogger, History, Callback)
are Keras's classes unchanged. `BaseLogger` is gone in Keras 3: its job, averaging
metrics over the epoch, is done by Keras's metrics themselves, and `History`,
`ProgbarLogger` and `RemoteMonitor` record the results.

`RemoteControl` goes further than `RemoteStop`: it honours every command sent
to the run (stop, stop after this epoch, pause and resume, checkpoint now, set
the learning rate) between batches.

Example:
    ```python
    from callboard.client import RemoteMonitor, RemoteStop

    model.fit(x, y, epochs=10, callbacks=[RemoteMonitor(run="baseline"), RemoteStop()])
    ```
"""

import importlib

from .run import Run

_CALLBACK_MODULES = {
    "RemoteMonitor": "remote_monitor",
    "RemoteStop": "remote_stop",
    "RemoteControl": "remote_control",
    "ModelCheckpoint": "model_checkpoint",
    "EarlyStopping": "early_stopping",
    "LearningRateScheduler": "learning_rate_scheduler",
    "ReduceLROnPlateau": "reduce_lr_on_plateau",
    "TerminateOnNaN": "terminate_on_nan",
    "BackupAndRestore": "backup_and_restore",
    "TensorBoard": "keras_callbacks",
    "LambdaCallback": "keras_callbacks",
    "CSVLogger": "keras_callbacks",
    "ProgbarLogger": "keras_callbacks",
    "History": "keras_callbacks",
    "Callback": "keras_callbacks",
    "CommandRefused": "_commands",
}

__all__ = ["Run", *_CALLBACK_MODULES]


def __getattr__(name):
    module_name = _CALLBACK_MODULES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'callboard.client' has no attribute {name!r}")
    module = importlib.import_module(f".{module_name}", __name__)
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
