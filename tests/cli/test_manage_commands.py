"""`callboard runs rename|tag|note|archive|restore|delete RUN` against a real server."""

import pytest

from tests.server.helpers import create_run

from .test_remote_commands import listed_names, one_line_on_stderr


def read(board, run_id):
    with board.client("read") as reader:
        return reader.get(f"/api/v1/runs/{run_id}")


def made(board, name, **fields):
    with board.client() as client:
        return create_run(client, name, project="managed", **fields)


def test_rename_by_name_then_by_id(board):
    run_id = made(board, "cli-old")
    renamed = board.call("runs", "rename", "cli-old", "cli-new", role="control")
    assert renamed.exit_code == 0, renamed.output
    assert renamed.stdout == f"Run {run_id} renamed: cli-old -> cli-new.\n"
    again = board.call("runs", "rename", str(run_id), "cli-newer", role="control")
    assert again.exit_code == 0, again.output
    assert read(board, run_id).json()["name"] == "cli-newer"


def test_tag_adds_and_removes(board):
    run_id = made(board, "cli-tags", tags=["draft", "keep"])
    tagged = board.call(
        "runs", "tag", str(run_id), "--add", "baseline", "--add", "keep", "--remove", "draft",
        role="control",
    )  # fmt: skip
    assert tagged.exit_code == 0, tagged.output
    assert tagged.stdout == f"Run {run_id} (cli-tags) tags: keep, baseline.\n"
    assert read(board, run_id).json()["tags"] == ["keep", "baseline"]
    nothing = one_line_on_stderr(board.call("runs", "tag", str(run_id), role="control"))
    assert nothing == "Nothing to change: give --add TAG or --remove TAG (or both)."


def test_note_from_text_and_from_a_file(board, tmp_path):
    run_id = made(board, "cli-note")
    noted = board.call("runs", "note", str(run_id), "**best** so far", role="control")
    assert noted.exit_code == 0, noted.output
    assert noted.stdout == f"Note saved on run {run_id} (cli-note).\n"
    assert read(board, run_id).json()["note_html"] == "<p><strong>best</strong> so far</p>\n"
    notes = tmp_path / "notes.md"
    notes.write_text("- lr 3e-4\n- <b>bold?</b>\n")
    from_file = board.call("runs", "note", str(run_id), "--file", str(notes), role="control")
    assert from_file.exit_code == 0, from_file.output
    run = read(board, run_id).json()
    assert run["note"] == notes.read_text()
    assert "&lt;b&gt;bold?&lt;/b&gt;" in run["note_html"]
    cleared = board.call("runs", "note", str(run_id), "", role="control")
    assert cleared.stdout == f"Note removed on run {run_id} (cli-note).\n"
    assert read(board, run_id).json()["note"] is None
    both = board.call("runs", "note", str(run_id), "x", "--file", str(notes), role="control")
    assert one_line_on_stderr(both) == "Give the note as TEXT or --file F (one of them)."


def test_archive_hides_from_the_list_and_restore_brings_it_back(board):
    run_id = made(board, "cli-shelf")
    archived = board.call("runs", "archive", "cli-shelf", role="control")
    assert archived.exit_code == 0, archived.output
    assert archived.stdout == (
        f"Run {run_id} (cli-shelf) archived: `callboard runs restore {run_id}` undoes it.\n"
    )
    assert "cli-shelf" not in listed_names(board.call("runs", "--project", "managed"))
    shelf = board.call("runs", "--project", "managed", "--archived")
    assert listed_names(shelf) == {"cli-shelf"}
    restored = board.call("runs", "restore", "cli-shelf", role="control")  # found by name
    assert restored.stdout == f"Run {run_id} (cli-shelf) restored to the runs list.\n"
    assert "cli-shelf" in listed_names(board.call("runs", "--project", "managed"))


def test_delete_needs_yes_and_an_admin_token(board):
    run_id = made(board, "cli-doomed")
    unconfirmed = board.call("runs", "delete", str(run_id), role="admin")
    assert one_line_on_stderr(unconfirmed) == (
        f"Not deleted: deleting run '{run_id}' removes all its data for good; add --yes."
    )
    refused = board.call("runs", "delete", str(run_id), "--yes", role="control")
    assert one_line_on_stderr(refused).startswith("Not allowed: role 'control' cannot do this")
    assert read(board, run_id).status_code == 200
    deleted = board.call("runs", "delete", str(run_id), "--yes", role="admin")
    assert deleted.exit_code == 0, deleted.output
    assert deleted.stdout == f"Deleted run {run_id} (cli-doomed) and all its data.\n"
    assert read(board, run_id).status_code == 404


@pytest.mark.parametrize(
    "words",
    [["rename", "x"], ["tag", "--add", "t"], ["note", "n"], ["archive"], ["restore"]],
    ids=lambda words: words[0],
)
def test_a_read_token_is_refused_and_an_unknown_run_is_one_line(board, words):
    run_id = made(board, f"cli-read-{words[0]}")
    refused = board.call("runs", words[0], str(run_id), *words[1:], role="read")
    assert one_line_on_stderr(refused).startswith("Not allowed: role 'read' cannot do this")
    missing = board.call("runs", words[0], "no-such-run", *words[1:], role="control")
    assert one_line_on_stderr(missing) == (
        "No run 'no-such-run' (give an id or a name; see `callboard runs`)."
    )


def test_a_name_the_server_refuses_is_one_line(board):
    run_id = made(board, "cli-bad-name")
    refused = board.call("runs", "rename", str(run_id), "two\nlines", role="control")
    assert one_line_on_stderr(refused).startswith("The server at ")
    assert "body.name" in one_line_on_stderr(refused)
