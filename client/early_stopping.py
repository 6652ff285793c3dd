"""Keras's `EarlyStopping` that also reports the stop to Callboard."""

import keras

from ._actions import as_number, report, reporting


class EarlyStopping(keras.callbacks.EarlyStopping):
    """Stops training when a monitored metric has stopped improving, and reports it.

    A drop-in for `keras.callbacks.EarlyStopping`: same arguments, same
    behaviour. With a Callboard `RemoteMonitor` in the same `callbacks` list, the
    stop sends an "early_stop" event with data `{"stopped_epoch", "monitor",
    "best", "restored_weights"}` (whether the best weights are put back at train
    end), and the run ends `stopped`.

    Args:
        monitor: quantity to watch, e.g. `"val_loss"`.
        min_delta: smallest change that counts as an improvement.
        patience: epochs without improvement before training stops.
        verbose: 0 is quiet, 1 prints when the callback acts.
        mode: `"auto"`, `"min"` or `"max"`.
        baseline: value the metric must beat to count as improving.
        restore_best_weights: put back the weights of the best epoch at the end.
        start_from_epoch: epochs to wait before watching.

    Example:
        ```python
        model.fit(x, y, validation_split=0.2, epochs=100, callbacks=[
            RemoteMonitor(run="patient"),
            EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)])
        ```
    """

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if epoch > 0 and self.stopped_epoch == epoch:
            with reporting(self):
                self._report_stop(epoch)

    def _report_stop(self, epoch):
        data = {
            "stopped_epoch": epoch,
            "monitor": self.monitor,
            "best": as_number(self.best),
            "restored_weights": bool(self.restore_best_weights and self.best_weights is not None),
        }
        run = report(self.model, "early_stop", data, epoch=epoch)
        if run is not None:
            run.final_status = "stopped"
