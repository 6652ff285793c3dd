"""Keras's `ReduceLROnPlateau` that also reports each rate reduction to Callboard."""

import keras

from ._actions import rate_changes_reported


class ReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """Reduces the learning rate when a metric stops improving, and reports it.

    A drop-in for `keras.callbacks.ReduceLROnPlateau`: same arguments, same
    behaviour. With a Callboard `RemoteMonitor` in the same `callbacks` list, each
    reduction sends an "lr_changed" event with data `{"old", "new"}`.

    Args:
        monitor: quantity to watch, e.g. `"val_loss"`.
        factor: `new_lr = lr * factor`.
        patience: epochs without improvement before the rate is reduced.
        verbose: 0 is quiet, 1 prints each reduction.
        mode: `"auto"`, `"min"` or `"max"`.
        min_delta: smallest change that counts as an improvement.
        cooldown: epochs to wait after a reduction before watching again.
        min_lr: lower bound on the learning rate.

    Example:
        ```python
        model.fit(x, y, validation_split=0.2, epochs=50, callbacks=[
            RemoteMonitor(run="plateau"),
            ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3)])
        ```
    """

    def on_epoch_end(self, epoch, logs=None):
        with rate_changes_reported(self, epoch):
            super().on_epoch_end(epoch, logs)
