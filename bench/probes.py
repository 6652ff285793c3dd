"""What a benchmark reads of processes and the machine: CPU seconds, settled memory, sockets."""

import contextlib
import os
import resource
import time

from .ceiling import process_cpu_seconds
from .common import rss_mib


def busy_cpu():
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as stat:
        ticks = [int(field) for field in stat.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu():
    """CPU seconds this process has used (user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def settled_rss(pid, quiet=0.02, deadline_seconds=20):
    """The server's RSS (MiB) once it has used under `quiet` s of CPU in half a second."""
    deadline = time.monotonic() + deadline_seconds
    cpu = process_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        cpu, was = process_cpu_seconds(pid), cpu
        if cpu - was < quiet:
            break
    return rss_mib(pid)


def open_sockets(pid):
    """How many sockets process `pid` holds open (Linux /proc)."""
    count = 0
    for fd in os.scandir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(fd.path).startswith("socket:")
    return count
