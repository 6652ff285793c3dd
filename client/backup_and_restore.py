"""Keras's `BackupAndRestore` whose resumed training continues the same Callboard run."""

import json
import warnings

import keras
from keras.src.utils import file_utils

from . import _exit_guard
from ._actions import report, reporting
from ._active import active_run, set_resume_uid

RUN_FILE = "callboard_run.json"


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Backs up the training state to resume after an interruption, on the same run.

    A drop-in for `keras.callbacks.BackupAndRestore`: same arguments, same
    behaviour. Next to Keras's backup it keeps the uid of the Callboard run
    (`callboard_run.json`), so when `fit()` resumes from the backup, a Callboard
    `RemoteMonitor` in the same `callbacks` list continues that run instead of
    starting a new one, and a "restored" event with data `{"epoch"}` (the epoch
    training resumes at) is sent.

    Args:
        backup_dir: directory for the backup; used by this callback only.
        save_freq: `"epoch"`, or back up every this many batches.
        double_checkpoint: also keep the previous backup, in case the latest
            one can't be read.
        delete_checkpoint: delete the backup once `fit()` completes.

    Example:
        ```python
        model.fit(x, y, epochs=100, callbacks=[
            RemoteMonitor(run="preemptible"),
            BackupAndRestore(backup_dir="/tmp/backup")])
        # killed at epoch 40 and started again: training resumes at epoch 40
        # and the dashboard keeps drawing the same run.
        ```
    """

    def __init__(
        self, backup_dir, save_freq="epoch", double_checkpoint=False, delete_checkpoint=True
    ):
        super().__init__(
            backup_dir,
            save_freq=save_freq,
            double_checkpoint=double_checkpoint,
            delete_checkpoint=delete_checkpoint,
        )
        self._run_file = file_utils.join(backup_dir, RUN_FILE)
        self._saved_uid = None
        self._restored_epoch = None

    def set_model(self, model):
        # Keras sets the model on every callback before any `on_train_begin`,
        # so the RemoteMonitor finds the hint whatever the callbacks' order.
        super().set_model(model)
        uid = self._backed_up_uid()
        set_resume_uid(model, uid)
        interrupted = active_run(model)
        if uid is not None and interrupted is not None and interrupted.uid == uid:
            # Resumed in the same process: the run goes on, so the interrupted
            # training's Run must not close it as failed when the process exits.
            _exit_guard.release(interrupted)

    def on_train_begin(self, logs=None):
        resuming = self._backup_exists()
        super().on_train_begin(logs)
        self._saved_uid = None
        # Reported at the first epoch begin: by then every on_train_begin ran, so
        # the RemoteMonitor has attached this fit's run whatever the order.
        self._restored_epoch = self._backed_up_epoch() if resuming else None

    def on_epoch_begin(self, epoch, logs=None):
        set_resume_uid(self.model, None)
        self._report_restore()

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self._save_uid()

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        if self.save_freq != "epoch":
            self._save_uid()

    def on_train_end(self, logs=None):
        self._report_restore()
        super().on_train_end(logs)
        set_resume_uid(self.model, None)

    def _backup_exists(self):
        paths = (getattr(self, "_weights_path", None), getattr(self, "_prev_weights_path", None))
        return any(path and file_utils.exists(path) for path in paths)

    def _read_json(self, path):
        with file_utils.File(path, "r") as f:
            return json.loads(f.read())

    def _backed_up_uid(self):
        """The uid of the run the backup belongs to, when there is a backup to resume."""
        try:
            if self._backup_exists() and file_utils.exists(self._run_file):
                return self._read_json(self._run_file).get("uid") or None
        except (OSError, ValueError, AttributeError) as exc:
            warnings.warn(
                f"Callboard could not read {self._run_file}; the resumed training "
                f"will report to a new run: {exc!r}",
                RuntimeWarning,
                stacklevel=2,
            )
        return None

    def _backed_up_epoch(self):
        try:
            return int(self._read_json(self._training_metadata_path)["epoch"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return 0

    def _report_restore(self):
        if self._restored_epoch is None or active_run(self.model) is None:
            return
        epoch, self._restored_epoch = self._restored_epoch, None
        with reporting(self):
            report(self.model, "restored", {"epoch": epoch}, epoch=epoch)

    def _save_uid(self):
        """Keep the run's uid next to Keras's backup, once per `fit()` and run."""
        run = active_run(self.model)
        if run is None or run.uid == self._saved_uid:
            return
        with reporting(self):
            if file_utils.exists(self.backup_dir):
                with file_utils.File(self._run_file, "w") as f:
                    f.write(json.dumps({"uid": run.uid}))
                self._saved_uid = run.uid
