"""Samples the training machine in the background: CPU, memory and NVIDIA GPUs."""

import contextlib
import threading
import warnings

import psutil  # ~10 ms at import, not on the sampler's first moments next to the training's

MB = 1024 * 1024


def check_interval(interval):
    """Raise `ValueError` unless `interval` is 0 / None (off) or a positive number of seconds."""
    if interval and not interval > 0:
        raise ValueError(f"system_metrics_interval must be 0 (off) or positive, got {interval!r}")


class GpuReader:
    """Utilisation and memory of every GPU NVML sees (`nvidia-ml-py`, the `gpu` extra).

    `GpuReader.open()` is None when the library is not installed, NVML can't start
    (no driver) or it sees no GPU: then there are simply no GPU series.
    """

    def __init__(self, nvml, handles):
        self.nvml = nvml
        self.handles = handles

    @classmethod
    def open(cls):
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
        except Exception:  # no NVIDIA driver or library: no GPU series, nothing to say
            return None
        try:
            count = pynvml.nvmlDeviceGetCount()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(index) for index in range(count)]
        except Exception:
            handles = []
        reader = cls(pynvml, handles)
        if not handles:
            reader.close()
            return None
        return reader

    def readers(self):
        """`(what, read)` per GPU, `read()` returning that GPU's metrics."""
        return [(f"GPU {index}", self._reader(index)) for index in range(len(self.handles))]

    def _reader(self, index):
        handle = self.handles[index]
        nvml = self.nvml

        def read():
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            return {
                f"system/gpu{index}_utilization": float(
                    nvml.nvmlDeviceGetUtilizationRates(handle).gpu
                ),
                f"system/gpu{index}_memory_mb": memory.used / MB,
                f"system/gpu{index}_memory_percent": 100.0 * memory.used / memory.total,
            }

        return read

    def close(self):
        with contextlib.suppress(Exception):  # shutting down is best effort
            self.nvml.nvmlShutdown()


def machine_readers():
    """`(what, read)` for the CPU and memory readings; CPU percentages count from this call."""
    process = psutil.Process()
    process.cpu_percent(None)
    psutil.cpu_percent(None)  # per thread in psutil: the training's own calls don't interfere

    def read_cpu():
        return {
            "system/cpu_percent": psutil.cpu_percent(None),
            "system/process_cpu_percent": process.cpu_percent(None),
        }

    def read_memory():
        return {
            "system/memory_mb": process.memory_info().rss / MB,
            "system/memory_percent": psutil.virtual_memory().percent,
        }

    return [("CPU", read_cpu), ("memory", read_memory)]


class SystemMetricsSampler:
    """Every `interval` seconds, hands one dict of the machine's metrics to `callback`.

    A daemon thread samples: `system/cpu_percent` (the whole machine, 0-100),
    `system/process_cpu_percent` (this process, as `top` shows it: 100 per busy
    core), `system/memory_mb` (this process's resident memory, MiB),
    `system/memory_percent` (the machine's memory in use) and, per GPU NVML sees,
    `system/gpu{i}_utilization`, `system/gpu{i}_memory_mb` and
    `system/gpu{i}_memory_percent`. `callback(metrics, number)` gets the sample's
    number too (0, 1, 2, ...). Everything, NVML's start included, runs on the
    sampler's thread; nothing is raised into the caller: the first failure (a
    reading, or the callback) is warned about once, naming what failed, and
    sampling goes on with what still works.

    Args:
        callback: `callback(metrics, number)`, called on the sampler's thread.
        interval: seconds between samples (> 0); the first comes one interval in.

    Example:
        ```python
        sampler = SystemMetricsSampler(lambda metrics, number: print(number, metrics), 5.0)
        sampler.start()
        train()
        sampler.stop()
        ```
    """

    def __init__(self, callback, interval=10.0):
        check_interval(interval)
        if not interval:
            raise ValueError("a sampler needs an interval above 0")
        self.callback = callback
        self.interval = float(interval)
        self.samples = 0
        self._readers = []
        self._stopped = threading.Event()
        self._warned = False
        self._thread = threading.Thread(
            target=self._loop, name="callboard-system-metrics", daemon=True
        )

    def start(self):
        """Start sampling in the background; returns the sampler."""
        self._thread.start()
        return self

    def stop(self, timeout=0.1):
        """Stop sampling; wait up to `timeout` seconds for the thread to end (it ends at
        once unless a sample is under way)."""
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def sample(self):
        """One sample of every reading that works, as `{name: value}`."""
        metrics = {}
        for what, read in self._readers:
            try:
                metrics.update(read())
            except Exception as exc:
                self._warn_once(f"reading {what}", exc, "the other system metrics go on")
        return metrics

    def _loop(self):
        gpus = None
        try:
            self._readers = machine_readers()  # CPU percentages count from here
            if self._stopped.wait(self.interval):
                return
            gpus = GpuReader.open()  # not before the first sample: a short run never loads NVML
            if gpus is not None:
                self._readers += gpus.readers()
            while True:
                self._send(self.sample())
                if self._stopped.wait(self.interval):
                    return
        except Exception as exc:  # a bug must never reach the training: say so once, stop
            self._warn_once("sampling", exc, "they stop for this run")
        finally:
            if gpus is not None:
                gpus.close()

    def _send(self, metrics):
        if not metrics:
            return
        try:
            self.callback(metrics, self.samples)
        except Exception as exc:
            self._warn_once("sending them", exc, "sampling goes on")
        self.samples += 1

    def _warn_once(self, what, exc, after):
        if self._warned:
            return
        self._warned = True
        warnings.warn(
            f"Callboard's system metrics failed {what} ({exc!r}); {after}, and no further "
            "failure is reported.",
            RuntimeWarning,
            stacklevel=2,
        )
