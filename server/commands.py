"""Remote commands to a run's training: their kinds, their lifecycle, and their effects.

A command is `requested` when a person (or a rule) issues it, `delivered` once
the training's long-poll has answered it, then `applied` or `refused` (with a
`detail`) as the training reports; a person may `cancel` it until then. Every
step is an event of the run (`command_requested`, `command_applied`, ...).

Applied commands change the run: `pause` makes it `paused`, `resume` `running`
again; `stop` (and `stop_after_epoch`, once the epoch ended) acknowledge the
run's stop, so it ends `stopped` like a stop asked through `POST /stop`.
Issuing `stop` requests the stop too, so old clients polling `GET /control`
see it; `POST /stop` issues a `stop` command; `POST /control/ack` settles
the run's unsettled `stop` commands as applied.

The functions taking `(connection, changed, ...)` are work for `RunWrites.write`.

Example:
    ```python
    work = functools.partial(issue_command, run_id=7, kind="pause", by="alice")
    command = await app.state.run_writes.write(work, order=7)
    ```
"""

import math
import time

from sqlalchemy import insert, select, update

from callboard.server.control import StopRefused, acknowledge_stop, request_stop
from callboard.server.live.hub import commands_channel
from callboard.server.store.models import ENDED_STATUSES, Command
from callboard.server.store.run_writes import RUNS, add_server_event, lock_run, update_run

COMMANDS = Command.__table__

KINDS = ("stop", "stop_after_epoch", "checkpoint", "set_learning_rate", "pause", "resume")
VALUE_KINDS = frozenset({"set_learning_rate"})  # the kinds that take a `value`
STATES = ("requested", "delivered", "applied", "refused", "cancelled")
UNSETTLED = ("requested", "delivered")  # what the training has still to apply or refuse
OUTCOMES = ("applied", "refused")  # what the training reports
STATUS_WHEN_APPLIED = {"pause": "paused", "resume": "running"}
STOPPING_KINDS = frozenset({"stop", "stop_after_epoch"})
# Commands one long-poll answer carries at most; the client asks again after the last.
MAX_PENDING = 100
# The detail of a `stop` applied by the stop's acknowledgement, before the client said where.
ACKNOWLEDGED = "applied by the stop's acknowledgement (POST /control/ack)"


class CommandRefused(Exception):
    """The run has ended: it takes no more commands (409)."""


class CommandConflict(Exception):
    """The command was settled otherwise, or cancelled (409)."""


class CommandNotFound(LookupError):
    """No such command in that run (404)."""


def value_problem(kind, value):
    """What is wrong with `value` for a command of `kind`, or None when it fits.

    Example:
        >>> value_problem("set_learning_rate", 0.01), value_problem("pause", 1.0)
        (None, "a 'pause' command takes no value")
    """
    if kind not in VALUE_KINDS:
        return None if value is None else f"a {kind!r} command takes no value"
    if value is None:
        return f"a {kind!r} command needs a value: a finite number > 0"
    if not math.isfinite(value) or value <= 0:
        return f"a {kind!r} command's value must be a finite number > 0, not {value!r}"
    return None


def _ended_refusal(run_id, status):
    return CommandRefused(f"run {run_id} has already ended with status {status!r}")


def _command(connection, run_id, command_id):
    row = connection.execute(
        select(COMMANDS).where(COMMANDS.c.id == command_id, COMMANDS.c.run_id == run_id)
    ).one_or_none()
    if row is None:
        raise CommandNotFound(f"command {command_id} not found in run {run_id}")
    return row


def _set(connection, command_id, **values):
    """Set command `command_id`'s columns to `values`; return its row."""
    return connection.execute(
        update(COMMANDS).where(COMMANDS.c.id == command_id).values(**values).returning(COMMANDS)
    ).one()


def issue_command(
    connection, changed, run_id, kind, value=None, reason=None, by=None, visible=None
):
    """Store a `requested` command for run `run_id`; return its row.

    Refused (`CommandRefused`) once the run has ended; a `lost` or `paused`
    run takes commands. `RunNotFound` unless `visible(project)`. Issuing
    `stop` also requests the run's stop (`control.request_stop`). Wakes the
    run's long-polls (`hub.commands_channel`).
    """
    run = lock_run(connection, run_id, (RUNS.c.status,), visible)
    if run.status in ENDED_STATUSES:
        raise _ended_refusal(run_id, run.status)
    row = connection.execute(
        insert(COMMANDS)
        .values(
            run_id=run_id,
            kind=kind,
            value=value,
            reason=reason,
            state="requested",
            requested_by=by,
            requested_at=time.time(),
        )
        .returning(COMMANDS)
    ).one()
    requested = {"command_id": row.id, "kind": kind, "value": value, "reason": reason, "by": by}
    add_server_event(connection, changed, run_id, "command_requested", requested)
    if kind == "stop":
        request_stop(connection, changed, run_id, reason=reason, visible=visible)
    changed.also(commands_channel(run_id))
    return row


def request_stop_command(connection, changed, run_id, reason=None, by=None, visible=None):
    """`POST /stop`: `control.request_stop`, and a `stop` command when the stop is new.

    Returns the run's `ControlRow`; asking again changes nothing (no second command).
    """
    before = lock_run(connection, run_id, (RUNS.c.stop_requested_at,), visible)
    run = request_stop(connection, changed, run_id, reason=reason, visible=visible)
    if before.stop_requested_at is None:
        issue_command(connection, changed, run_id, "stop", reason=reason, by=by, visible=visible)
    return run


def acknowledge_stop_command(connection, changed, run_id, visible=None, epoch=None, step=None):
    """`POST /control/ack`: `control.acknowledge_stop`, and the run's unsettled `stop`
    commands applied; return the run's `ControlRow`."""
    run = acknowledge_stop(connection, changed, run_id, visible=visible)
    unsettled = connection.execute(
        select(COMMANDS.c.id).where(
            COMMANDS.c.run_id == run_id,
            COMMANDS.c.kind == "stop",
            COMMANDS.c.state.in_(UNSETTLED),
        )
    ).scalars()
    for command_id in list(unsettled):
        _record_outcome(
            connection, changed, run_id, command_id, "applied", ACKNOWLEDGED, epoch, step
        )
    return run


def read_pending(connection, run_id, after):
    """Run `run_id`'s unsettled commands with id > `after`, oldest first (`MAX_PENDING` at most)."""
    return connection.execute(
        select(COMMANDS)
        .where(
            COMMANDS.c.run_id == run_id,
            COMMANDS.c.id > after,
            COMMANDS.c.state.in_(UNSETTLED),
        )
        .order_by(COMMANDS.c.id)
        .limit(MAX_PENDING)
    ).all()


def deliver_commands(connection, changed, run_id, after):
    """`read_pending`, the `requested` ones marked `delivered`: what the long-poll answers.

    Work for `RunWrites.write`; it publishes nothing (no long-poll needs waking).
    """
    pending = read_pending(connection, run_id, after)
    if any(row.state == "requested" for row in pending):
        connection.execute(
            update(COMMANDS)
            .where(
                COMMANDS.c.run_id == run_id,
                COMMANDS.c.id > after,
                COMMANDS.c.id <= pending[-1].id,
                COMMANDS.c.state == "requested",
            )
            .values(state="delivered", delivered_at=time.time())
        )
        pending = read_pending(connection, run_id, after)
    return pending


def read_commands(connection, run_id):
    """Every command of run `run_id`, oldest first."""
    return connection.execute(
        select(COMMANDS).where(COMMANDS.c.run_id == run_id).order_by(COMMANDS.c.id)
    ).all()


def settle_command(
    connection,
    changed,
    run_id,
    command_id,
    state,
    detail=None,
    epoch=None,
    step=None,
    visible=None,
):
    """The training applied or refused (`state`) the command; return its row.

    Reporting the same outcome again changes nothing, but for a `stop` the
    stop's acknowledgement applied first: the client's report says where it
    took effect (epoch, step, detail). `CommandConflict` when it was settled
    otherwise or cancelled; `CommandNotFound`, `RunNotFound` (unless
    `visible(project)`). An applied command acts on a run not ended yet (see
    the module's docstring).
    """
    run = lock_run(connection, run_id, (RUNS.c.status,), visible)
    command = _command(connection, run_id, command_id)
    if command.state == state and command.detail == ACKNOWLEDGED:
        return _set(connection, command_id, epoch=epoch, step=step, detail=detail)
    if command.state == state:
        return command
    if command.state not in UNSETTLED:
        raise CommandConflict(f"command {command_id} is already {command.state}")
    row = _record_outcome(connection, changed, run_id, command_id, state, detail, epoch, step)
    if state == "applied" and run.status not in ENDED_STATUSES:
        _take_effect(connection, changed, run_id, row, run.status, epoch, step)
    return row


def _record_outcome(connection, changed, run_id, command_id, state, detail, epoch, step):
    row = _set(
        connection,
        command_id,
        state=state,
        detail=detail,
        settled_at=time.time(),
        epoch=epoch,
        step=step,
    )
    outcome = {
        "command_id": row.id,
        "kind": row.kind,
        "value": row.value,
        "detail": detail,
        "epoch": epoch,
        "step": step,
    }
    add_server_event(connection, changed, run_id, f"command_{state}", outcome)
    return row


def _take_effect(connection, changed, run_id, command, status, epoch, step):
    """What an applied `command` changes on the run (its status is `status`, not ended)."""
    new_status = STATUS_WHEN_APPLIED.get(command.kind)
    if new_status is not None and new_status != status:
        update_run(connection, run_id, status=new_status, updated_at=time.time())
        changed.add(run_id)
    if command.kind in STOPPING_KINDS:
        try:
            request_stop(connection, changed, run_id, reason=command.reason)
        except StopRefused:  # pragma: no cover - the run is not ended: checked above
            return
        acknowledge_stop_command(connection, changed, run_id, epoch=epoch, step=step)


def cancel_command(connection, changed, run_id, command_id, visible=None):
    """A person withdraws a command the training has not applied or refused; return its row.

    Cancelling twice changes nothing; `CommandConflict` once applied or refused.
    Cancelling a run's last unsettled `stop` withdraws the stop it requested,
    unless the training has acknowledged it. Wakes the run's long-polls.
    """
    run = lock_run(
        connection,
        run_id,
        (RUNS.c.status, RUNS.c.stop_requested_at, RUNS.c.stop_acknowledged_at),
        visible,
    )
    command = _command(connection, run_id, command_id)
    if command.state == "cancelled":
        return command
    if command.state not in UNSETTLED:
        raise CommandConflict(f"command {command_id} was already {command.state}: too late")
    row = _set(connection, command_id, state="cancelled", settled_at=time.time())
    cancelled = {"command_id": row.id, "kind": row.kind}
    add_server_event(connection, changed, run_id, "command_cancelled", cancelled)
    if row.kind == "stop" and _stop_unwanted(connection, run_id, run):
        update_run(connection, run_id, stop_requested_at=None, stop_reason=None)
    changed.also(commands_channel(run_id))
    return row


def _stop_unwanted(connection, run_id, run):
    """True when the run's requested stop may be withdrawn: not acknowledged, not ended,
    and no other `stop` command waits."""
    if run.status in ENDED_STATUSES or run.stop_requested_at is None:
        return False
    if run.stop_acknowledged_at is not None:
        return False
    waiting = connection.execute(
        select(COMMANDS.c.id)
        .where(
            COMMANDS.c.run_id == run_id,
            COMMANDS.c.kind == "stop",
            COMMANDS.c.state.in_(UNSETTLED),
        )
        .limit(1)
    ).first()
    return waiting is None


def status_on_return(connection, run_id):
    """The status of a `lost` run whose client is heard again: `paused` when the last
    `pause`/`resume` it applied was a pause, else `running`."""
    last = connection.execute(
        select(COMMANDS.c.kind)
        .where(
            COMMANDS.c.run_id == run_id,
            COMMANDS.c.kind.in_(tuple(STATUS_WHEN_APPLIED)),
            COMMANDS.c.state == "applied",
        )
        .order_by(COMMANDS.c.settled_at.desc(), COMMANDS.c.id.desc())
        .limit(1)
    ).scalar()
    return STATUS_WHEN_APPLIED.get(last, "running")
