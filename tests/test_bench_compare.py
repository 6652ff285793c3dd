"""The bench runner's before/after table and its partial rewrite of docs/benchmarks.md."""

from bench.compare import changes, changes_table, merge, sections

OLD = """# Benchmarks

Machine: old

## Ingest: Callboard vs MLflow (both on SQLite)

| measure | Callboard | MLflow | target |
|---|---|---|---|
| 1 client, epoch posts | 771 req/s | 48.8 req/s | ≥ 100× |
| bulk | 95,055 points/s | 6,246 points/s | ≥ 50× |

- a note

## Memory: server RSS

| state | Callboard MiB |
|---|---|
| idle | 93.1 |
"""

NEW_INGEST = """## Ingest: Callboard vs MLflow (both on SQLite, 20 s)

| measure | Callboard | MLflow | target |
|---|---|---|---|
| 1 client, epoch posts | 1,542 req/s | 48.8 req/s | ≥ 100× |
| bulk | 90,000 points/s | 6,246 points/s | ≥ 50× |
| a new row | 5 req/s | 1 req/s | |
"""

NEW_CEILING = """## Ingest vs the HTTP stack's ceiling

| load | Callboard |
|---|---|
| 1 client | 1,500 req/s |
"""


def test_each_figure_is_shown_before_and_now_with_its_change():
    rows = changes(OLD, NEW_INGEST + "\n" + NEW_CEILING)
    doubled = ("Ingest", "1 client, epoch posts", "Callboard", "771 req/s", "1,542 req/s", "+100%")
    assert doubled in rows
    assert ("Ingest", "bulk", "Callboard", "95,055 points/s", "90,000 points/s", "-5%") in rows
    assert not [row for row in rows if row[2] == "target"], "targets are goals, not figures"
    assert not [row for row in rows if row[1] == "a new row"], "nothing to compare it with"
    assert not [row for row in rows if row[0] != "Ingest"], "the ceiling section is new"
    table = changes_table(OLD, NEW_INGEST)
    assert table.startswith("| benchmark | measure | figure | before | now | change |")


def test_a_partial_run_replaces_its_sections_and_keeps_the_others():
    merged = merge(OLD, NEW_INGEST + "\n" + NEW_CEILING)
    keys = [key for key in sections(merged) if key]
    assert keys == ["Ingest", "Ingest vs the HTTP stack's ceiling", "Memory"]
    assert "1,542 req/s" in merged and "771 req/s" not in merged
    assert "| idle | 93.1 |" in merged, "the memory section was not re-run: it stays"
    assert merge("", NEW_CEILING).strip() == NEW_CEILING.strip()
