"""Keras's `ModelCheckpoint` that also reports each saved checkpoint to Callboard."""

import os

import keras

from ._actions import as_number, report, reporting
from ._active import active_run


def _file_state(path):
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


class ModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Saves the model or its weights at some frequency, and reports each save.

    A drop-in for `keras.callbacks.ModelCheckpoint`: same arguments, same
    behaviour. With a Callboard `RemoteMonitor` in the same `callbacks` list,
    every file really written (not the epochs `save_best_only` skips) sends a
    "checkpoint_saved" event with data `{"path", "epoch", "monitor", "value"}`:
    the absolute path, the 0-based epoch, and the monitored quantity's value
    then (None when it is not logged).

    Args:
        filepath: where to save; a `.keras` path, or `.weights.h5` with
            `save_weights_only`; may hold `{epoch:02d}`-style placeholders
            filled from the epoch and the logs.
        monitor: quantity to watch, e.g. `"val_loss"`.
        verbose: 0 is quiet, 1 prints when the callback acts.
        save_best_only: only save when the monitored quantity improves.
        save_weights_only: save only the weights.
        mode: `"auto"`, `"min"` or `"max"`.
        save_freq: `"epoch"`, or save every this many batches.
        initial_value_threshold: the value to beat before the first save.

    Example:
        ```python
        model.fit(x, y, validation_split=0.2, epochs=20, callbacks=[
            RemoteMonitor(run="best-only"),
            ModelCheckpoint("best.keras", monitor="val_loss", save_best_only=True)])
        ```
    """

    def _should_save_model(self, epoch, batch, logs, filepath):
        decided = super()._should_save_model(epoch, batch, logs, filepath)
        self._save_decided = bool(decided)
        return decided

    def _save_model(self, epoch, batch, logs):
        if active_run(self.model) is None:
            return super()._save_model(epoch, batch, logs)
        # Keras decides in `_should_save_model`; a changed file also counts, for
        # Keras versions that decide inline.
        self._save_decided = False
        path = self._get_file_path(epoch, batch, logs or {})
        before = _file_state(path)
        super()._save_model(epoch, batch, logs)
        after = _file_state(path)
        if self._save_decided or (after is not None and after != before):
            with reporting(self):
                self._report_save(path, epoch, logs or {})

    def _report_save(self, path, epoch, logs):
        data = {
            "path": os.path.abspath(path),
            "epoch": epoch,
            "monitor": self.monitor,
            "value": as_number(logs.get(self.monitor)),
        }
        report(self.model, "checkpoint_saved", data, epoch=epoch)
