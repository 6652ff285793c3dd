"""Stops a Keras `fit()` when someone presses Stop on the Callboard server."""

import keras

from ._active import active_run
from ._api import DEFAULT_ROOT, ServerApi
from ._stop_poller import StopPoller, read_run_control


class RemoteStop(keras.callbacks.Callback):
    """Polls the run's control state in the background and stops training on request.

    The poll runs in a daemon thread, so it adds no per-batch hook; once a stop
    is requested it sets `model.stop_training = True`, which `fit()` honours
    after the current batch, acknowledges the stop, and the run ends `stopped`.

    With a Callboard `RemoteMonitor` in the same `callbacks` list it follows that
    run. Otherwise it follows the newest live run named `run` in `project` (for
    example one fed by the stock `keras.callbacks.RemoteMonitor`), through a
    look-up an ingest token may make; a stop asked of that name's run before this
    `fit()` began (left from an earlier training) is ignored. A token the server
    refuses gets one warning, and training goes on.

    Args:
        root: server root URL (used without a Callboard RemoteMonitor).
        run: run name to follow (used without a Callboard RemoteMonitor).
        project: project of that run.
        interval: seconds between polls.
        token: API token (an ingest token is enough; with a Callboard
            RemoteMonitor, the monitor's own token is used).
        headers: extra HTTP headers.
        client: an `httpx.Client` to send through (for tests).

    Example:
        ```python
        model.fit(x, y, epochs=100,
                  callbacks=[RemoteMonitor(run="long-job"), RemoteStop()])
        # elsewhere: callboard stop long-job
        ```
    """

    async_safe = True

    def __init__(
        self,
        root=DEFAULT_ROOT,
        run=None,
        project="default",
        interval=1.0,
        token=None,
        headers=None,
        client=None,
    ):
        super().__init__()
        self.root = root
        self.run_name = run
        self.project = project
        self.interval = interval
        self.token = token
        self.headers = headers
        self.client = client
        self.stopped_remotely = False
        self._poller = None
        self._trained_model = None
        self._looked_up = False  # the name was looked up at least once in this fit()
        self._stale_runs = set()  # runs of that name whose stop predates this fit()

    def on_train_begin(self, logs=None):
        # The polling thread must never read `self.model`: on JAX that property
        # syncs the trainer's state into the model (`jax_state_sync`), which races
        # the training step donating those buffers ("Buffer has been deleted or
        # donated"). The model is taken here, on the training thread, once.
        self._trained_model = self.model
        self._looked_up = False
        self._stale_runs = set()
        api = ServerApi(self.root, headers=self.headers, token=self.token, client=self.client)
        self._poller = StopPoller(api, None, self._stop, self.interval, self._read_control)
        self._poller.start()

    def _read_control(self):
        run = active_run(self._trained_model)
        if run is not None:
            return read_run_control(run.api, run.id)
        if not self.run_name:
            return None
        return self._control_by_name()

    def _control_by_name(self):
        control = self._poller.api.control_by_name(self.run_name, self.project)
        first, self._looked_up = not self._looked_up, True
        if control is None:
            return None
        if first and control.stop_requested:
            self._stale_runs.add(control.run_id)
        return None if control.run_id in self._stale_runs else control

    def _stop(self, control):
        # Runs on the polling thread. `fit()` reads the flag after every batch, so
        # no batch hook is needed; a plain attribute store is atomic under the GIL.
        # The run queues its acknowledgement before the flag is set, so it reaches
        # the server ahead of the run's last events.
        self.stopped_remotely = True
        run = active_run(self._trained_model)
        acknowledged = run is not None and run.acknowledge_stop()
        self._trained_model.stop_training = True
        return acknowledged

    def on_train_end(self, logs=None):
        if self._poller is not None:
            self._poller.close()
