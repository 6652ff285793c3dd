"""Callboard's benchmarks: `python -m bench --help`."""
