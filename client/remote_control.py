"""Honours the commands sent to a Keras `fit()` from Callboard: stop, pause, checkpoint, set-lr."""

import math

import keras

from ._actions import _readable_rate
from ._active import active_checkpoint, active_run, attach_run
from ._api import DEFAULT_ROOT
from ._commands import CommandRefused
from ._values import check_run_names
from .model_checkpoint import UnfilledPlaceholder, fill_checkpoint_path, save_model
from .run import Run

NO_CHECKPOINT = "no ModelCheckpoint in this fit and no checkpoint_path given"


def _learning_rate_variable(optimizer):
    """The optimizer's learning-rate `Variable`; `CommandRefused` when it has none."""
    if optimizer is None:
        raise CommandRefused("the model has no optimizer (compile it first)")
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's own
    rate = inner.learning_rate
    if isinstance(rate, keras.Variable):
        return rate
    held = getattr(inner, "_learning_rate", rate)  # what `learning_rate` evaluates
    if isinstance(held, keras.optimizers.schedules.LearningRateSchedule):
        raise CommandRefused(
            f"the optimizer's learning rate is a schedule ({type(held).__name__}), not a variable"
        )
    raise CommandRefused(
        f"the optimizer's learning rate is a {type(held).__name__}, not a variable"
    )


def _checked_rate(value):
    """`value` as a float if it is a finite number > 0, else `CommandRefused`."""
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = math.nan
    if not math.isfinite(rate) or rate <= 0:
        raise CommandRefused(f"a learning rate must be a finite number > 0, got {value!r}")
    return rate


class RemoteControl(keras.callbacks.Callback):
    """Applies the commands sent to this training from Callboard, between batches.

    Commands (`callboard pause RUN`, the run page's buttons, `POST
    /api/v1/runs/{id}/commands`) reach the run's background thread at once; this
    callback applies them on the training thread, before each batch:

    - `stop`: the batch about to start is the last (`model.stop_training`);
      `on_epoch_end` and `on_train_end` still run, the run ends `stopped`.
    - `stop_after_epoch`: the current epoch ends (validation and `on_epoch_end`
      included), then training stops.
    - `pause` / `resume`: training waits before the next batch until `resume`
      (or `stop`); the run keeps its heartbeats and shows `paused`.
    - `set_learning_rate`: assigns the optimizer's learning-rate variable before
      the next batch and reports it (an "lr_changed" event, and the
      `learning_rate` metric at the current epoch, as RemoteMonitor logs it).
      Refused when the optimizer was given a `LearningRateSchedule`, or the
      value is not a finite number > 0.
    - `checkpoint`: saves now through the Callboard `ModelCheckpoint` of this
      `fit()` (its filepath, honouring `save_weights_only`), else to
      `checkpoint_path`; both are filled as Keras fills them (`{epoch}` the
      current epoch, 1-based, `{batch}` the batches done in it, other
      placeholders from the last epoch's logs), and a "checkpoint_saved" event
      carries the path. Refused without either.

    Each command ends `applied`, or `refused` with its reason, at the epoch and
    step where the training was. With a Callboard `RemoteMonitor` in the same
    `callbacks` list (in any position) it uses that monitor's run. Otherwise it
    opens a run of its own named `run` in `project` for this `fit()`, which the
    other Callboard callbacks report to, and finishes it at train end.

    Args:
        root: server root URL (used without a Callboard RemoteMonitor).
        run: name of its own run (without a Callboard RemoteMonitor); the
            server picks one when omitted.
        project: project of its own run.
        token: API token of its own run (an ingest token).
        headers: extra HTTP headers of its own run.
        checkpoint_path: where a `checkpoint` command saves when this `fit()`
            has no Callboard `ModelCheckpoint`: a `.keras` or `.h5` path (the
            model), or `.weights.h5` (its weights); may hold `{epoch:02d}`-style
            placeholders.
        client: an `httpx.Client` for its own run to send through (for tests).

    Example:
        ```python
        from callboard.client import ModelCheckpoint, RemoteControl, RemoteMonitor

        model.fit(x, y, epochs=100, callbacks=[
            RemoteMonitor(run="long-job"),
            ModelCheckpoint("ckpt/{epoch:03d}-{batch}.keras"),
            RemoteControl(),
        ])
        # elsewhere: callboard pause long-job; callboard set-lr long-job 3e-4;
        #            callboard checkpoint long-job; callboard resume long-job
        ```
    """

    # No batch-end hook: Keras calls `on_train_batch_begin` on the training
    # thread whatever `async_safe` says, so this callback never slows dispatch.
    async_safe = True

    def __init__(
        self,
        root=DEFAULT_ROOT,
        run=None,
        project="default",
        token=None,
        headers=None,
        checkpoint_path=None,
        client=None,
    ):
        super().__init__()
        check_run_names(run, project)
        if checkpoint_path is not None:
            checkpoint_path = str(checkpoint_path)
            if not checkpoint_path.endswith((".keras", ".h5")):
                raise ValueError(
                    "checkpoint_path must end in .keras or .h5 (the model) or .weights.h5 "
                    f"(its weights), got {checkpoint_path!r}"
                )
        self.root = root
        self.run_name = run
        self.project = project
        self.token = token
        self.headers = headers
        self.checkpoint_path = checkpoint_path
        self.client = client
        self.run = None
        self._own_run = None
        self._trained_model = None
        self._reset_position()

    def _reset_position(self):
        self.epoch = 0  # the epoch in progress, 0-based
        self._batches_done = 0  # in the current epoch
        self._last_batch_begun = None  # in the current epoch
        self._steps_before_epoch = 0
        self._last_logs = {}

    @property
    def step(self):
        """Training steps done in this `fit()` so far."""
        return self._steps_before_epoch + self._batches_done

    def on_train_begin(self, logs=None):
        # Kept here, on the training thread: `self.model` syncs JAX's state, which
        # the handlers do on purpose, but nothing else needs.
        self._trained_model = self.model
        self.run = None
        self._own_run = None
        self._reset_position()

    def _run_of_this_fit(self):
        """The monitor's run, else this callback's own (opened once every `on_train_begin` ran)."""
        if self.run is None:
            run = active_run(self._trained_model)
            if run is None:
                run = self._own_run = self._open_own_run()
            run.on_command("set_learning_rate", self._set_learning_rate)
            run.on_command("checkpoint", self._checkpoint)
            self.run = run
        return self.run

    def _open_own_run(self):
        run = Run(
            root=self.root,
            name=self.run_name,
            project=self.project,
            token=self.token,
            headers=self.headers,
            client=self.client,
        )
        attach_run(self._trained_model, run)
        run.start(params=self.params)
        return run

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self._steps_before_epoch += self._batches_done
        self._batches_done = 0
        self._last_batch_begun = None
        self._run_of_this_fit()

    def on_train_batch_begin(self, batch, logs=None):
        self._batches_done = self._last_batch_begun = batch
        run = self._run_of_this_fit()
        run.handle_commands(epoch=self.epoch, step=self.step)  # outcomes say where
        if run.paused:
            run.wait_while_paused()
        if run.should_stop:
            self._trained_model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self._last_logs = dict(logs or {})
        self._batches_done = self._steps_in_epoch()
        run = self._run_of_this_fit()
        run.handle_commands(epoch=epoch, step=self.step)
        run.end_of_epoch(epoch)
        if run.should_stop:
            self._trained_model.stop_training = True

    def _steps_in_epoch(self):
        if self._last_batch_begun is None:
            return 0
        per_call = max(1, int(getattr(self._trained_model, "steps_per_execution", 1) or 1))
        done = self._last_batch_begun + per_call
        steps = (self.params or {}).get("steps")
        return min(done, steps) if steps else done

    def on_train_end(self, logs=None):
        run, self._own_run = self._own_run, None
        if run is not None:
            stopped = getattr(self._trained_model, "stop_training", False)
            run.finish(run.final_status or ("stopped" if stopped else "finished"))

    # --- command handlers: they run on the training thread, inside the hooks above ---

    def _set_learning_rate(self, command):
        new = _checked_rate(command.value)
        model = self.model  # on JAX, syncs the training state into the variables first
        variable = _learning_rate_variable(getattr(model, "optimizer", None))
        old = _readable_rate(keras.ops.convert_to_numpy(variable))
        variable.assign(new)
        now = _readable_rate(keras.ops.convert_to_numpy(variable))
        # The metric sits at the epoch, as RemoteMonitor's per-epoch `learning_rate`
        # does (one axis for the chart); the event also says the step.
        self.run.log_event("metrics", epoch=self.epoch, metrics={"learning_rate": now})
        data = {"old": old, "new": now, "command_id": command.id}
        self.run.log_event("lr_changed", data=data, epoch=self.epoch, step=self.step)
        return f"learning rate {old:g} -> {now:g}"

    def _checkpoint(self, command):
        model = self.model  # on JAX, syncs the training state into the variables first
        saver = active_checkpoint(self._trained_model)
        if saver is None and self.checkpoint_path is None:
            raise CommandRefused(NO_CHECKPOINT)
        last_batch = self._batches_done - 1  # Keras's index of the last batch done
        try:
            if saver is not None:
                path = saver.save_now(self.epoch, last_batch, self._last_logs)
            else:
                path = fill_checkpoint_path(
                    self.checkpoint_path, self.epoch, last_batch, self._last_logs
                )
                path = save_model(
                    model, path, weights_only=self.checkpoint_path.endswith(".weights.h5")
                )
        except UnfilledPlaceholder as exc:
            raise CommandRefused(f"cannot name the checkpoint now: {exc}") from None
        data = {"path": path, "epoch": self.epoch, "command_id": command.id}
        self.run.log_event("checkpoint_saved", data=data, epoch=self.epoch, step=self.step)
        return f"saved {path}"
