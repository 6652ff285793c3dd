"""Keras's `TerminateOnNaN` that also reports the NaN to Callboard."""

import keras
import numpy as np

from ._actions import report, reporting


class TerminateOnNaN(keras.callbacks.TerminateOnNaN):
    """Terminates training when the loss becomes NaN or infinite, and reports it.

    A drop-in for `keras.callbacks.TerminateOnNaN`: same arguments, same
    behaviour. With a Callboard `RemoteMonitor` in the same `callbacks` list, the
    bad batch sends a "nan" event with data `{"batch", "epoch"}` and the run ends
    `failed`. With `raise_error=True` Keras skips every `on_train_end`, so the
    run is closed as `failed` here, just before the error is raised.

    Args:
        raise_error: if False (default), stop gracefully through
            `model.stop_training = True`; if True, raise `RuntimeError` at once.

    Example:
        ```python
        model.fit(x, y, epochs=10, callbacks=[
            RemoteMonitor(run="risky-lr"), TerminateOnNaN()])
        ```
    """

    def __init__(self, raise_error=False):
        super().__init__(raise_error=raise_error)
        self._epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None:
            with reporting(self):
                if not np.isfinite(loss):
                    self._report_nan(batch)
        super().on_batch_end(batch, logs)

    def _report_nan(self, batch):
        data = {"batch": int(batch), "epoch": self._epoch}
        run = report(self.model, "nan", data, epoch=self._epoch)
        if run is None:
            return
        run.final_status = "failed"
        if self.raise_error:
            run.finish("failed", error=f"NaN or Inf loss encountered at batch {batch}")
