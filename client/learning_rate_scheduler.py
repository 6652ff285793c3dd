"""Keras's `LearningRateScheduler` that also reports each rate change to Callboard."""

import keras

from ._actions import rate_changes_reported


class LearningRateScheduler(keras.callbacks.LearningRateScheduler):
    """Sets the learning rate every epoch from a schedule, and reports changes.

    A drop-in for `keras.callbacks.LearningRateScheduler`: same arguments, same
    behaviour. With a Callboard `RemoteMonitor` in the same `callbacks` list, each
    epoch whose rate really changes sends an "lr_changed" event with data
    `{"old", "new"}`.

    Args:
        schedule: function of `(epoch, lr)` (or just `epoch`) returning the new
            learning rate as a float.
        verbose: 0 is quiet, 1 prints each update.

    Example:
        ```python
        def schedule(epoch, lr):
            return lr if epoch < 10 else lr * 0.9

        model.fit(x, y, epochs=30, callbacks=[
            RemoteMonitor(run="decay"), LearningRateScheduler(schedule)])
        ```
    """

    def on_epoch_begin(self, epoch, logs=None):
        with rate_changes_reported(self, epoch):
            super().on_epoch_begin(epoch, logs)
