"""Keras's `ModelCheckpoint` that also reports each saved checkpoint to Callboard."""

import os

import keras

from ._actions import as_number, report, reporting
from ._active import active_run, attach_checkpoint, detach_checkpoint


def _file_state(path):
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


class UnfilledPlaceholder(ValueError):
    """A checkpoint path holds a placeholder with no value now (`{val_loss}` mid-epoch)."""


def fill_checkpoint_path(pattern, epoch, batch=None, logs=None):
    """`pattern` with its placeholders filled as Keras's `ModelCheckpoint` fills them.

    `epoch` and `batch` are Keras's 0-based indices of the epoch and of the last
    batch done: `{epoch}` reads `epoch + 1`, `{batch}` `batch + 1`; other
    placeholders (`{val_loss:.2f}`) come from `logs`. A placeholder with no value
    raises `UnfilledPlaceholder` naming it.

    Example:
        >>> fill_checkpoint_path("ckpt-{epoch:02d}-{batch}.keras", epoch=2, batch=9)
        'ckpt-03-10.keras'
    """
    logs = dict(logs or {})
    values = {**logs, "epoch": epoch + 1}
    if batch is not None and "batch" not in logs:
        values["batch"] = batch + 1
    try:
        return pattern.format(**values)
    except (KeyError, IndexError) as exc:
        raise UnfilledPlaceholder(f"no value for the placeholder {exc} of {pattern!r}") from None
    except ValueError as exc:  # e.g. "{loss:.2f}" given a string
        raise UnfilledPlaceholder(f"cannot fill {pattern!r}: {exc}") from None


def save_model(model, path, weights_only=False):
    """Save `model` (or only its weights) to `path`, making its folder; return the absolute path."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    if weights_only:
        model.save_weights(path, overwrite=True)
    else:
        model.save(path, overwrite=True)
    return os.path.abspath(path)


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

    A Callboard `RemoteControl` in the same `fit()` saves through it when a
    `checkpoint` command arrives (`save_now`): to its filepath, filled with the
    current epoch and batch, whatever `save_best_only` and `save_freq` say.

    Example:
        ```python
        model.fit(x, y, validation_split=0.2, epochs=20, callbacks=[
            RemoteMonitor(run="best-only"),
            ModelCheckpoint("best.keras", monitor="val_loss", save_best_only=True)])
        ```
    """

    def set_model(self, model):
        super().set_model(model)
        attach_checkpoint(model, self)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        detach_checkpoint(self._model, self)

    def save_now(self, epoch, batch=None, logs=None):
        """Save now to `filepath` filled with `epoch`, `batch` and `logs`; return the absolute path.

        Honours `save_weights_only`; ignores `save_best_only` and `save_freq`. The
        caller reports the save (`RemoteControl` sends "checkpoint_saved").
        A placeholder with no value in `logs` raises `UnfilledPlaceholder`.

        Example:
            ```python
            path = checkpoint.save_now(epoch=3, batch=41)  # "ckpt-04-42.keras"
            ```
        """
        path = fill_checkpoint_path(self.filepath, epoch, batch, logs)
        return save_model(self.model, path, weights_only=self.save_weights_only)

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
