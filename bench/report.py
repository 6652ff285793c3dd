"""Benchmark results: a titled table of rows, printed and written to docs/benchmarks.md."""

import os
import platform
from dataclasses import dataclass, field


@dataclass
class Report:
    """One benchmark's results: `rows` are dicts sharing the same keys."""

    title: str
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    # More tables after the notes: (caption, rows) pairs.
    tables: list = field(default_factory=list)

    def markdown(self):
        lines = [f"## {self.title}", "", *_table(self.rows)]
        lines.extend(f"- {note}" for note in self.notes)
        for caption, rows in self.tables:
            lines += ["", caption, "", *_table(rows)]
        return "\n".join(lines).rstrip() + "\n"


def _table(rows):
    if not rows:
        return []
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(row.get(k)) for k in keys) + " |" for row in rows]
    return [*lines, ""]


def _cell(value):
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


def machine_info():
    """One line about where the figures were measured."""
    cpus = os.cpu_count()
    try:
        with open("/proc/meminfo") as f:
            memory = f"{int(f.readline().split()[1]) / 2**20:.0f} GiB"
    except OSError:
        memory = "unknown memory"
    return f"{platform.platform()}, {cpus} CPUs, {memory}, Python {platform.python_version()}"
