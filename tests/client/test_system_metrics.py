"""The background sampler of the training machine, alone and inside a `Run`."""

import sys
import threading
import time
import types
import warnings
from types import SimpleNamespace

import psutil
import pytest

from callboard.client import Run
from callboard.client._system_metrics import MB, SystemMetricsSampler

from .fake_server import FakeServer

DEADLINE = 10.0
MACHINE_SERIES = {
    "system/cpu_percent",
    "system/process_cpu_percent",
    "system/memory_mb",
    "system/memory_percent",
}


class Samples:
    """A sampler's callback: keeps every `(number, metrics)` it is handed."""

    def __init__(self):
        self.got = []
        self.arrived = threading.Condition()

    def __call__(self, metrics, number):
        with self.arrived:
            self.got.append((number, metrics))
            self.arrived.notify_all()

    def wait_for(self, count):
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.got) >= count, DEADLINE):
                raise AssertionError(f"{len(self.got)} samples, not {count}, in {DEADLINE} s")
        return self.got[:count]


def sampled(count, interval=0.02):
    """The first `count` samples of a sampler, and the sampler (stopped)."""
    samples = Samples()
    sampler = SystemMetricsSampler(samples, interval).start()
    try:
        return samples.wait_for(count), sampler
    finally:
        sampler.stop()


def fake_nvml(gpus=1, init_error=None):
    """A stand-in `pynvml` module with `gpus` GPUs at 40 % use and 2 of 8 GiB taken."""

    class NVMLError(Exception):
        pass

    def init():
        if init_error:
            raise NVMLError(init_error)

    module = types.ModuleType("pynvml")
    module.NVMLError = NVMLError
    module.nvmlInit = init
    module.nvmlShutdown = lambda: setattr(module, "shut_down", True)
    module.nvmlDeviceGetCount = lambda: gpus
    module.nvmlDeviceGetHandleByIndex = lambda index: f"gpu-{index}"
    module.nvmlDeviceGetUtilizationRates = lambda handle: SimpleNamespace(gpu=40, memory=10)
    module.nvmlDeviceGetMemoryInfo = lambda handle: SimpleNamespace(
        used=2 * 1024 * MB, total=8 * 1024 * MB, free=6 * 1024 * MB
    )
    module.shut_down = False
    return module


def test_samples_hold_the_machines_cpu_and_memory_in_range():
    got, _ = sampled(3)
    assert [number for number, _ in got] == [0, 1, 2]
    cores = psutil.cpu_count() or 1
    own_rss = psutil.Process().memory_info().rss / MB
    for _, metrics in got:
        assert set(metrics) >= MACHINE_SERIES
        assert all(isinstance(value, float) for value in metrics.values()), metrics
        assert 0 <= metrics["system/cpu_percent"] <= 100
        assert 0 <= metrics["system/process_cpu_percent"] <= 100 * cores
        assert 0 < metrics["system/memory_percent"] <= 100
        assert own_rss / 2 < metrics["system/memory_mb"] < own_rss * 2


def test_process_cpu_shows_a_busy_thread():
    samples = Samples()
    sampler = SystemMetricsSampler(samples, 0.3).start()
    busy_until = time.monotonic() + 0.8
    while time.monotonic() < busy_until:
        pass  # one core kept busy by this thread
    try:
        [(_, first), *_] = samples.wait_for(2)
    finally:
        sampler.stop()
    assert first["system/process_cpu_percent"] > 30, first


def test_no_gpu_series_without_the_library(monkeypatch, recwarn):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    got, _ = sampled(2)
    assert [set(metrics) for _, metrics in got] == [MACHINE_SERIES, MACHINE_SERIES]
    assert not recwarn.list


def test_no_gpu_series_and_no_warning_when_nvml_cannot_start(monkeypatch, recwarn):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(init_error="Driver Not Loaded"))
    got, _ = sampled(2)
    assert [set(metrics) for _, metrics in got] == [MACHINE_SERIES, MACHINE_SERIES]
    assert not recwarn.list


def test_no_gpu_series_when_nvml_sees_no_gpu(monkeypatch, recwarn):
    nvml = fake_nvml(gpus=0)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    got, _ = sampled(1)
    assert set(got[0][1]) == MACHINE_SERIES and nvml.shut_down
    assert not recwarn.list


def test_each_gpu_nvml_sees_gets_its_series(monkeypatch):
    nvml = fake_nvml(gpus=2)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    got, _ = sampled(1)
    metrics = got[0][1]
    for index in (0, 1):
        assert metrics[f"system/gpu{index}_utilization"] == 40.0
        assert metrics[f"system/gpu{index}_memory_mb"] == 2048.0
        assert metrics[f"system/gpu{index}_memory_percent"] == 25.0
    assert "system/gpu2_utilization" not in metrics
    assert nvml.shut_down  # stop() closed NVML


def test_stop_ends_the_thread_at_once_even_with_a_long_interval():
    sampler = SystemMetricsSampler(Samples(), interval=3600).start()
    assert sampler._thread.is_alive()
    started = time.monotonic()
    sampler.stop(timeout=DEADLINE)
    assert not sampler._thread.is_alive()
    assert time.monotonic() - started < 1.0  # the hour's wait was cut short
    assert sampler._thread.daemon


def test_a_failing_reading_warns_once_naming_it_and_the_rest_goes_on(monkeypatch):
    def broken():
        raise PermissionError("no /proc/meminfo")

    monkeypatch.setattr(psutil, "virtual_memory", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got, _ = sampled(4)
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == 1, messages
    assert "memory" in messages[0] and "no /proc/meminfo" in messages[0]
    for _, metrics in got:
        assert "system/memory_percent" not in metrics
        assert {"system/cpu_percent", "system/process_cpu_percent"} <= set(metrics)


def test_a_failing_callback_warns_once_and_sampling_goes_on():
    calls = []

    def refuse(metrics, number):
        calls.append(number)
        raise RuntimeError("queue closed")

    sampler = SystemMetricsSampler(refuse, 0.02)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampler.start()
        deadline = time.monotonic() + DEADLINE
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        sampler.stop()
    assert calls[:3] == [0, 1, 2]
    assert len(caught) == 1 and "queue closed" in str(caught[0].message)


@pytest.mark.parametrize("interval", [-1, -0.5])
def test_a_negative_interval_is_refused(interval):
    with pytest.raises(ValueError, match="system_metrics_interval"):
        Run(root="http://callboard.test", system_metrics_interval=interval)


def test_a_run_sends_samples_as_metrics_events_between_its_start_and_end():
    server = FakeServer()
    run = Run(
        root="http://callboard.test",
        name="sampled",
        client=server.client(),
        system_metrics_interval=0.02,
    ).start()
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        run.flush()
        if len([e for e in server.stored() if e["kind"] == "metrics"]) >= 3:
            break
    run.log({"loss": 0.5}, epoch=0)
    run.finish()
    events = server.stored()
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "train_begin" and kinds[-1] == "train_end"
    samples = [e for e in events if e["kind"] == "metrics"]
    assert len(samples) >= 3
    assert [e["step"] for e in samples] == list(range(len(samples)))
    assert all(set(e["metrics"]) >= MACHINE_SERIES and e["epoch"] is None for e in samples)
    assert all(isinstance(e["time"], float) for e in samples)
    assert run.commands.last_step is None  # the samples' numbers are not the training's steps
    run._system_metrics._thread.join(DEADLINE)
    assert not run._system_metrics._thread.is_alive()


def test_interval_zero_samples_nothing():
    server = FakeServer()
    with Run(
        root="http://callboard.test", client=server.client(), system_metrics_interval=0
    ) as run:
        assert run._system_metrics is None
    assert [e["kind"] for e in server.stored()] == ["train_begin", "train_end"]
