"""What people change on a run after the fact: its name, tags, note, archiving; deleting it.

Each is work for `RunWrites.write`, so every open page sees the change live. Every
change but a deletion is also a server event on the run, saying who made it:
`renamed`, `tagged`, `noted`, `archived`, `unarchived` (not `restored`: that is
the training's own event when `BackupAndRestore` resumes it).
"""

import time

from sqlalchemy import delete

from callboard.server.store.run_writes import RUNS, add_server_event, lock_run, update_run

EDITED = (RUNS.c.name, RUNS.c.tags, RUNS.c.note, RUNS.c.archived_at)


def edit_run(connection, changed, run_id, patch, by, visible=None):
    """Apply `patch` (a `RunPatch`: only the fields it sets) to run `run_id` as `by`.

    Returns True when anything changed; a field set to what it already is changes
    nothing and records no event. Raises `RunNotFound` unless `visible(project)`.
    """
    run = lock_run(connection, run_id, EDITED, visible)
    now = time.time()
    values, events = {}, []
    fields = patch.model_fields_set
    if "name" in fields and patch.name != run.name:
        values["name"] = patch.name
        events.append(("renamed", {"from": run.name, "to": patch.name}))
    if "tags" in fields and patch.tags != (run.tags or []):
        old = run.tags or []
        values["tags"] = patch.tags
        added = [tag for tag in patch.tags if tag not in old]
        removed = [tag for tag in old if tag not in patch.tags]
        events.append(("tagged", {"added": added, "removed": removed, "tags": patch.tags}))
    note = patch.note or None  # an empty note is no note
    if "note" in fields and note != run.note:
        values["note"] = note
        events.append(("noted", {"chars": len(note or "")}))
    if "archived" in fields and patch.archived != (run.archived_at is not None):
        values["archived_at"] = now if patch.archived else None
        events.append(("archived" if patch.archived else "unarchived", {}))
    if not values:
        return False
    # A newer update time is what carries the change to the live runs list.
    update_run(connection, run_id, updated_at=now, **values)
    for kind, data in events:
        add_server_event(connection, changed, run_id, kind, {**data, "by": by})
    return True


def delete_run(connection, changed, run_id, visible=None):
    """Delete run `run_id` and, through the foreign keys' cascades, every row of it:
    events, metric points and rollups, commands, rule states and firings (and their
    webhook deliveries). Raises `RunNotFound` unless `visible(project)`."""
    lock_run(connection, run_id, (RUNS.c.id,), visible)
    connection.execute(delete(RUNS).where(RUNS.c.id == run_id))
    changed.add(run_id)
