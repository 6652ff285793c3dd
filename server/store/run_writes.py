"""The one way a run's state changes: work on the group-commit writer, then a live publish.

Every writer of a run (creation, events, stock Keras posts, stop and its
acknowledgement, heartbeats, the silent-run sweep, server events) hands
`RunWrites.write` a function of a Core `Connection` and a `ChangedRuns`. The
writer runs it in a shared transaction, ordered by run id; once that commits,
the channels of the runs it marked changed are published on the live hub
(across replicas on PostgreSQL), and the runs-list channel with them. A new
kind of change (a remote command, a rule firing) is one more such function.

The statements every such change is built from live here too: projects and
runs created, a run locked for update, server events. They are built from the
models' `Table`s and write through the connection, never through ORM objects.
"""

import functools
import time
import uuid

from sqlalchemy import insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from callboard.server.live.hub import RUNS_CHANNEL, run_channel
from callboard.server.store.ingest import RunNotFound
from callboard.server.store.models import Event, Project, Run
from callboard.server.store.storable import json_safe

RUNS, PROJECTS, EVENTS = Run.__table__, Project.__table__, Event.__table__


class ChangedRuns:
    """The runs a piece of work changed: each is published once the work has committed.

    `also(channel)` publishes one more channel with them (e.g. a run's
    `hub.commands_channel`, which only a command issued or cancelled wakes).
    """

    __slots__ = ("ids", "extra")

    def __init__(self):
        self.ids = set()
        self.extra = set()

    def add(self, run_id):
        self.ids.add(run_id)

    def also(self, channel):
        self.extra.add(channel)

    def channels(self):
        """Each changed run's channel, the extra channels, and the runs-list channel when a
        run changed; none when nothing changed."""
        extra = tuple(sorted(self.extra))
        if not self.ids:
            return extra
        return (*(run_channel(run_id) for run_id in sorted(self.ids)), *extra, RUNS_CHANNEL)


class RunWrites:
    """Stores changes to runs through the group-commit writer, then publishes them.

    Args:
        writer: the app's `group_commit.GroupCommit`.
        hub: the app's live hub (`live.make_hub`).

    Example:
        ```python
        def revive(connection, changed, run_id):
            update_run(connection, run_id, status="running")
            changed.add(run_id)

        await app.state.run_writes.write(functools.partial(revive, run_id=7), order=7)
        ```
    """

    def __init__(self, writer, hub):
        self.writer = writer
        self.hub = hub
        # Told the ids of the runs each write changed, once it committed (the rule engine).
        self.on_change = None

    async def write(self, work, order=0, size=1):
        """Run `work(connection, changed)` in the writer's next group; return its result.

        `order` is the run id when known (see `GroupCommit.run`). Nothing is
        published when the work raises or its transaction fails.
        """
        changed = ChangedRuns()
        result = await self.writer.run(
            functools.partial(work, changed=changed), order=order, size=size
        )
        self.publish(changed)
        return result

    async def write_in_turns(self, work, turns, order=0):
        """`work(connection, changed, part)` for each `(part, size)` of `turns` (see
        `GroupCommit.run_in_turns`); what committed is published, even if a later turn fails."""
        changed = ChangedRuns()
        try:
            return await self.writer.run_in_turns(
                functools.partial(work, changed=changed), turns, order=order
            )
        finally:
            self.publish(changed)  # a wake-up for a rolled-back turn only costs a re-read

    def publish(self, changed):
        channels = changed.channels()
        if channels:
            self.hub.publish(*channels)
        if changed.ids and self.on_change is not None:
            self.on_change(changed.ids)


def dialect_insert(connection, table):
    """An INSERT of `table` that can skip conflicting rows (`on_conflict_do_nothing`)."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def get_or_create_project(connection, name, lock=False):
    """The id of project `name`, created if missing; `lock` holds its row until commit."""
    connection.execute(
        dialect_insert(connection, PROJECTS).on_conflict_do_nothing(index_elements=["name"]),
        {"name": name, "created_at": time.time()},
    )
    query = select(PROJECTS.c.id).where(PROJECTS.c.name == name)
    return connection.execute(query.with_for_update() if lock else query).scalar_one()


def automatic_run_name(now=None):
    """A readable default name such as `run-20261128-153012-3fa2`."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"run-{stamp}-{uuid.uuid4().hex[:4]}"


class UidTaken(ValueError):
    """The uid belongs to a run of another project: it cannot be claimed from this one."""


def create_run(connection, changed, spec, source="client"):
    """Create the run `spec` (a `RunCreate`) describes, or find the one holding its uid.

    Returns `(run_id, created)`. Raises `UidTaken` when a run of another project
    holds the uid: nothing of that run is returned, nor changed. A run created
    meanwhile with the same uid (another request or replica) is found, not doubled.
    """
    if spec.uid:
        existing = _run_of_uid(connection, spec.uid)
        if existing is not None:
            return _claimed(existing, spec)
    now = time.time()
    values = {
        "uid": spec.uid or uuid.uuid4().hex,
        "project_id": get_or_create_project(connection, spec.project),
        "name": spec.name or automatic_run_name(now),
        "status": "running",
        "source": source,
        "config": spec.config,  # validated `JsonObject`s are already `json_safe`
        "tags": spec.tags,
        "host": spec.host,
        "versions": spec.versions,
        "params": {},
        "summary": {},
        "epochs_done": 0,
        "last_seq": 0,
        "created_at": now,
        "updated_at": now,
    }
    statement = (
        dialect_insert(connection, RUNS)
        .on_conflict_do_nothing(index_elements=["uid"])
        .returning(RUNS.c.id)
    )
    run_id = connection.execute(statement, values).scalar()
    if run_id is None:  # the uid was taken between the look-up and the insert
        return _claimed(_run_of_uid(connection, values["uid"]), spec)
    changed.add(run_id)
    return run_id, True


def _run_of_uid(connection, uid):
    return connection.execute(
        select(RUNS.c.id, PROJECTS.c.name.label("project"))
        .join_from(RUNS, PROJECTS, PROJECTS.c.id == RUNS.c.project_id)
        .where(RUNS.c.uid == uid)
    ).one_or_none()


def _claimed(existing, spec):
    """`(id, False)` of the run holding `spec.uid`, when it is in the project `spec` names."""
    if existing.project != spec.project:
        raise UidTaken(
            f"uid {spec.uid!r} belongs to a run of another project; "
            "a run is re-created with its uid only in its own project"
        )
    return existing.id, False


def lock_run(connection, run_id, columns, visible=None):
    """Run `run_id`'s `columns` and its `project` name, its row locked until commit (PostgreSQL).

    Raises `RunNotFound` when the run is missing or `visible(project)` is false.
    """
    row = connection.execute(
        select(*columns, PROJECTS.c.name.label("project"))
        .join_from(RUNS, PROJECTS, PROJECTS.c.id == RUNS.c.project_id)
        .where(RUNS.c.id == run_id)
        .with_for_update(of=RUNS)
    ).one_or_none()
    if row is None or (visible is not None and not visible(row.project)):
        raise RunNotFound(run_id)
    return row


def update_run(connection, run_id, **values):
    """Set run `run_id`'s columns to `values`."""
    connection.execute(update(RUNS).where(RUNS.c.id == run_id).values(**values))


def add_server_event(connection, changed, run_id, kind, data=None):
    """Record an event the server itself observed (stop requested, run lost, ...) on the
    run, at its latest epoch and step."""
    now = time.time()
    connection.execute(
        insert(EVENTS).values(
            run_id=run_id,
            seq=None,
            kind=kind,
            epoch=select(RUNS.c.last_epoch).where(RUNS.c.id == run_id).scalar_subquery(),
            step=select(RUNS.c.last_step).where(RUNS.c.id == run_id).scalar_subquery(),
            time=now,
            received_at=now,
            metrics={},
            data=json_safe(data or {}),
        )
    )
    changed.add(run_id)
