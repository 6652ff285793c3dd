"""Streams a Keras training run to a Callboard server."""

import math
import threading

import keras

from ._active import attach_run, resume_uid
from ._api import DEFAULT_ROOT
from ._system_metrics import check_interval
from ._values import check_run_names, scalar_logs
from .run import Run


def current_learning_rate(model):
    """The optimizer's current learning rate as a float, or None."""
    try:
        return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    except Exception:  # no optimizer yet, or a schedule Keras can't evaluate here
        return None


class RemoteMonitor(keras.callbacks.Callback):
    """Streams epoch (and optionally batch) metrics and run events to Callboard.

    A superset of `keras.callbacks.RemoteMonitor`: `root`, `path`, `field`,
    `headers` and `send_as_json` are accepted with the same meaning for the
    server address and headers; events travel in batches over Callboard's JSON
    API from a background thread, so a slow or unreachable server never blocks
    `fit()`, and undelivered events wait in an on-disk spool.

    Args:
        root: server root URL.
        path: kept for compatibility with the stock callback (Callboard's own
            API paths are fixed).
        field: kept for compatibility with the stock callback.
        headers: extra HTTP headers, e.g. `{"Authorization": "Bearer ..."}`.
        send_as_json: kept for compatibility (Callboard always sends JSON).
        run: run name; the server picks one when omitted.
        project: project name.
        config: hyper-parameters to record with the run.
        tags: list of strings.
        batch_frequency: also send batch metrics every N training batches.
        token: API token.
        client: an `httpx.Client` to send through (for tests).
        spool_dir: where undelivered events wait.
        flush_timeout: most seconds `on_train_end` waits for delivery.
        system_metrics_interval: seconds between samples of the machine (CPU,
            memory, NVIDIA GPUs) while `fit()` runs, stored as metrics
            `system/...` and sampled on a background thread; 0 turns it off.

    Example:
        ```python
        from callboard.client import RemoteMonitor, RemoteStop

        model.fit(x, y, epochs=10, callbacks=[
            RemoteMonitor(root="http://127.0.0.1:8000", run="baseline",
                          config={"lr": 1e-3}),
            RemoteStop(),
        ])
        ```
    """

    async_safe = True

    def __init__(
        self,
        root=DEFAULT_ROOT,
        path="/publish/epoch/end/",
        field="data",
        headers=None,
        send_as_json=False,
        run=None,
        project="default",
        config=None,
        tags=None,
        batch_frequency=None,
        token=None,
        client=None,
        spool_dir=None,
        flush_timeout=10.0,
        system_metrics_interval=10.0,
    ):
        super().__init__()
        if batch_frequency is not None and int(batch_frequency) < 1:
            raise ValueError(f"batch_frequency must be a positive integer, got {batch_frequency!r}")
        check_run_names(run, project)  # here, not once fit() has started
        check_interval(system_metrics_interval)
        self.root = root
        self.path = path
        self.field = field
        self.headers = headers
        self.send_as_json = send_as_json
        self.run_name = run
        self.project = project
        self.config = config
        self.tags = tags
        self.batch_frequency = int(batch_frequency) if batch_frequency else None
        self.token = token
        self.client = client
        self.spool_dir = spool_dir
        self.flush_timeout = flush_timeout
        self.system_metrics_interval = system_metrics_interval
        self.run = None
        self._uid = None
        self._last_logs = {}
        self._epoch = None
        self._step = 0  # training steps done before the current epoch
        self._epoch_steps = 0  # steps done in the current epoch
        self._steps_lock = threading.Lock()
        self._steps_per_call = 1
        self._epoch_length = None
        if self.batch_frequency:
            # Only a monitor that watches batches overrides the batch hook, so
            # epoch-level monitoring leaves Keras's batch dispatch untouched.
            self.on_train_batch_end = self._on_train_batch_end

    def on_train_begin(self, logs=None):
        self.run = Run(
            root=self.root,
            name=self.run_name,
            project=self.project,
            config=self.config,
            tags=self.tags,
            token=self.token,
            headers=self.headers,
            uid=self._uid or resume_uid(self.model),
            client=self.client,
            spool_dir=self.spool_dir,
            flush_timeout=self.flush_timeout,
            system_metrics_interval=self.system_metrics_interval,
        )
        self._uid = self.run.uid
        self._steps_per_call = max(1, int(getattr(self.model, "steps_per_execution", 1) or 1))
        self._epoch_length = (self.params or {}).get("steps")
        attach_run(self.model, self.run)
        self.run.start(params=self.params)

    def _on_train_batch_end(self, batch, logs=None):
        # Keras may call this from a thread pool (JAX, torch: both callbacks are
        # async-safe), in any order, so the step comes from Keras's batch index,
        # not a counter. `batch` is the last of the call's `steps_per_execution`
        # steps. Only a call that passes a multiple of `batch_frequency` reads `logs`.
        # Never read `self.model` here: on JAX that syncs the trainer's state off-thread.
        done = batch + 1
        if self._epoch_length:
            done = min(done, self._epoch_length)
        with self._steps_lock:
            self._epoch_steps = max(self._epoch_steps, done)
        first = self._step + max(0, batch + 1 - self._steps_per_call)  # done before this call
        step = self._step + done
        if step // self.batch_frequency > first // self.batch_frequency:
            metrics = {f"batch/{k}": v for k, v in scalar_logs(logs).items()}
            self.run.log_event(
                "batch_end", epoch=self._epoch, step=step, metrics=metrics, urgent=False
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_steps = 0

    def on_epoch_end(self, epoch, logs=None):
        # Keras has finished every batch hook of the epoch before this call.
        self._step += self._epoch_steps
        self._epoch_steps = 0
        metrics = scalar_logs(logs)
        if "learning_rate" not in metrics and "lr" not in metrics:
            rate = current_learning_rate(self.model)
            if rate is not None:
                metrics["learning_rate"] = rate
        self._last_logs = metrics
        self.run.log_event("epoch_end", epoch=epoch, step=self._step or None, metrics=metrics)

    def on_train_end(self, logs=None):
        if self.run is None:
            return
        self.run.finish(self._final_status())

    def _final_status(self):
        if self.run.final_status:
            return self.run.final_status
        if not getattr(self.model, "stop_training", False):
            return "finished"
        loss = self._last_logs.get("loss")
        if isinstance(loss, str) or (isinstance(loss, float) and not math.isfinite(loss)):
            return "failed"
        return "stopped"
