"""The rule engine: every rule judged on the runs that changed, off the request path.

`RunWrites` tells the engine which runs each committed write changed
(`runs_changed`: a set update, nothing more, on the writer's path). The
engine's task takes those runs a batch at a time, reads what is new (the
metric points past where each rule last looked, the run's status) on a
reader thread, and stores each change of standing through the writer
(`firing.record_standing`), where a firing does its actions. Once a second it
also judges `silent` rules on the live runs. A change after a quiet
spell is judged at once; after each batch the engine pauses twenty times as
long as the batch took (10 ms to 0.25 s), so it spends at most a twentieth of
its time judging, and a training posting thousands of times a second costs a
few evaluations a second, not one per post.

Example:
    ```python
    engine = RuleEngine(database, run_writes, hub, sender)
    run_writes.on_change = engine.runs_changed
    engine.start()
    ...
    await engine.stop()
    ```
"""

import asyncio
import bisect
import contextlib
import functools
import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from callboard.server.live.hub import RULES_CHANNEL
from callboard.server.rules.firing import Standing, record_standing
from callboard.server.rules.reads import new_points, run_query, runs_by_id, values_at
from callboard.server.rules.spec import METRIC_CONDITIONS, stored_parts
from callboard.server.rules.watches import MetricWatch, run_observation
from callboard.server.store.models import (
    ENDED_STATUSES,
    LIVE_STATUSES,
    Rule,
    RuleState,
    Run,
)

log = logging.getLogger("callboard.rules")

RULES, STATES = Rule.__table__, RuleState.__table__


@dataclass(frozen=True)
class LoadedRule:
    """A stored rule with its condition and actions as their models (`spec`)."""

    id: int
    name: str
    project: str | None
    condition: object
    actions: list
    base_url: str | None

    def watches(self, project):
        return self.project is None or self.project == project


class Judgement:
    """Where one rule stands on one run in this process: the stored `Standing`, and the
    metric watch fed up to `cursor` (None: nothing fed yet)."""

    __slots__ = ("standing", "watch", "cursor")

    def __init__(self, rule, standing):
        self.standing = standing
        kind = rule.condition.kind
        self.watch = MetricWatch(rule.condition) if kind in METRIC_CONDITIONS else None
        self.cursor = None


@dataclass(frozen=True)
class Change:
    """A standing to store: the rule, the run, where it stood, where it goes, and why."""

    rule: LoadedRule
    run: object
    before: Standing
    active: bool
    cursor: int | None
    observations: tuple = ()  # one per episode begun: each fires


class RuleEngine:
    """Judges every rule on the runs that changed, and `silent` rules every `tick_seconds`.

    Args:
        database: the app's `Database` (read on a thread).
        run_writes: the app's `RunWrites` (standings and firings are stored through it).
        hub: the live hub (rules changed on any replica: `RULES_CHANNEL`).
        sender: the `WebhookSender`, woken when a firing queued webhooks.
        pause: the shortest and longest pause after a batch, in which more changes gather.
    """

    def __init__(self, database, run_writes, hub, sender, pause=(0.01, 0.25), tick_seconds=1.0):
        self.database = database
        self.run_writes = run_writes
        self.hub = hub
        self.sender = sender
        self.pause = pause
        self.tick_seconds = tick_seconds
        self.rules = []
        self._judgements = {}  # run id -> {rule id -> Judgement}
        self._dirty = set()
        self._loop = None
        self._loop_thread = None
        self._wake = None
        self._rules_stale = True
        self._tasks = ()
        self._values_at = values_at

    def start(self):
        """Start judging (from inside the server's event loop)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        # Subscribed now, not in the task: a rule changed right after start is not missed.
        rule_changes = self.hub.subscribe(RULES_CHANNEL)
        self._tasks = (
            asyncio.create_task(self._judge_forever()),
            asyncio.create_task(self._follow_rule_changes(rule_changes.__enter__())),
        )

    async def stop(self):
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = ()

    def runs_changed(self, run_ids):
        """Judge `run_ids` soon (thread-safe; free while no rule exists)."""
        if not self.rules and not self._rules_stale:
            return
        self._dirty.update(run_ids)
        if self._loop is None or self._wake.is_set():
            return
        if threading.get_ident() == self._loop_thread:  # writes publish on the loop: no hop
            self._wake.set()
        else:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _follow_rule_changes(self, changes):
        with changes:
            while True:
                if await changes.wait(3600):
                    self._rules_stale = True
                    self._wake.set()

    async def _judge_forever(self):
        next_tick = 0.0
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_tick - time.monotonic()))
            self._wake.clear()
            tick = time.monotonic() >= next_tick
            if tick:
                next_tick = time.monotonic() + self.tick_seconds
            began = time.monotonic()
            try:
                await self._judge_once(tick)
            except Exception:  # a rule engine that dies silently is worse than a logged error
                log.exception("rule evaluation failed; trying again at the next change")
            shortest, longest = self.pause
            await asyncio.sleep(min(longest, max(shortest, 20 * (time.monotonic() - began))))

    async def _judge_once(self, tick):
        if self._rules_stale:
            self._rules_stale = False
            self.rules = await run_in_threadpool(self._load_rules)
            self._judgements.clear()
        dirty, self._dirty = self._dirty, set()
        if not self.rules or not (dirty or tick):
            return
        changes = await run_in_threadpool(self._judge, dirty, tick, time.time())
        for change in changes:
            await self._store(change)

    async def _store(self, change):
        """Store one change of standing; forget what this process knew when it could not."""
        run_id = change.run.id
        work = functools.partial(
            record_standing,
            rule=change.rule,
            run=change.run,
            before=change.before,
            active=change.active,
            cursor=change.cursor,
            observations=change.observations,
        )
        try:
            stored = await self.run_writes.write(work, order=run_id)
        except Exception:
            log.exception(
                "could not store rule %s on run %s; judging again", change.rule.id, run_id
            )
            stored = None
            self._dirty.add(run_id)
        judgements = self._judgements.get(run_id, {})
        if stored is None:  # moved by another replica, or failed: read it again, judge again
            judgements.pop(change.rule.id, None)
            self.runs_changed((run_id,))
            return
        standing, webhooks = stored
        if change.rule.id in judgements:
            judgements[change.rule.id].standing = standing
        if webhooks:
            self.sender.wake()

    def _load_rules(self):
        with self.database.reader() as session:
            rows = session.execute(select(RULES).order_by(RULES.c.id)).all()
        loaded = []
        for row in rows:
            try:
                condition, actions = stored_parts(row.condition, row.actions)
            except ValueError:
                log.warning("rule %s is not readable by this version; skipped", row.id)
                continue
            loaded.append(
                LoadedRule(row.id, row.name, row.project, condition, actions, row.base_url)
            )
        return loaded

    def _judge(self, run_ids, tick, now):
        """The changes of standing to store (runs in `run_ids`, and silent ones on a tick)."""
        self._values_at = functools.cache(values_at)  # read once per batch, whatever asks
        changes = []
        with self.database.reader() as session:
            connection = session.connection()
            runs = {run.id: (run, False) for run in runs_by_id(connection, run_ids)}
            if tick:
                for run in self._silentruns_by_id(connection, now):
                    runs.setdefault(run.id, (run, True))
            for run, only_silent in runs.values():
                rules = [rule for rule in self.rules if rule.watches(run.project)]
                if only_silent:
                    rules = [rule for rule in rules if rule.condition.kind == "silent"]
                if rules:
                    changes.extend(self._judge_run(connection, run, rules, now))
                if run.status in ENDED_STATUSES:
                    self._judgements.pop(run.id, None)  # it will not change much more
        return changes

    def _silentruns_by_id(self, connection, now):
        silent = [rule.condition.seconds for rule in self.rules if rule.condition.kind == "silent"]
        if not silent:
            return []
        last_heard = func.coalesce(Run.last_event_at, Run.created_at)
        return connection.execute(
            run_query().where(Run.status.in_(LIVE_STATUSES), last_heard < now - min(silent))
        ).all()

    def _judgements_of(self, connection, run, rules):
        known = self._judgements.setdefault(run.id, {})
        missing = [rule for rule in rules if rule.id not in known]
        if missing:
            stored = {
                row.rule_id: Standing(row.active, row.episode, row.cursor, row.version)
                for row in connection.execute(
                    select(STATES).where(
                        STATES.c.run_id == run.id,
                        STATES.c.rule_id.in_([rule.id for rule in missing]),
                    )
                )
            }
            for rule in missing:
                known[rule.id] = Judgement(rule, stored.get(rule.id, Standing()))
        return known

    def _judge_run(self, connection, run, rules, now):
        judgements = self._judgements_of(connection, run, rules)
        points = new_points(connection, run.id, rules, judgements)
        steps = {key: [point[0] for point in series] for key, series in points.items()}
        for rule in rules:
            judgement = judgements[rule.id]
            if judgement.watch is None:
                observation = run_observation(rule.condition, run, now)
                change = _change(rule, run, judgement, observation, judgement.standing.cursor)
            else:
                key, cursor = rule.condition.metric, judgement.cursor
                start = 0 if cursor is None else bisect.bisect_right(steps.get(key, ()), cursor)
                change = self._feed(connection, rule, run, judgement, points.get(key, [])[start:])
            if change is not None:
                yield change

    def _feed(self, connection, rule, run, judgement, points):
        """Judge the rule on `points` (new to this process); the change of standing, if any."""
        if not points:
            return None
        stored = judgement.standing
        first_look, judgement.cursor = judgement.cursor is None, points[-1][0]
        if first_look and stored.cursor is not None:  # judged before this process started:
            seen = bisect.bisect_right([point[0] for point in points], stored.cursor)
            judgement.watch.warm(points[:seen])  # their episodes are stored
            points = points[seen:]
            if not points:
                return None
        fired, active = judgement.watch.judge(
            points,
            stored.active,
            functools.partial(self._others_at, connection, run, rule.condition.metric),
        )
        if not fired and active == stored.active:
            return None
        return Change(rule, run, stored, active, judgement.cursor, tuple(fired))

    def _others_at(self, connection, run, metric, step):
        values = self._values_at(connection, run.project_id, metric, step)
        return [value for run_id, value in values.items() if run_id != run.id]


def _change(rule, run, judgement, observation, cursor):
    """The change a run-level `observation` makes to the rule's standing, if any."""
    holds, stored = observation is not None, judgement.standing
    if holds == stored.active:
        return None
    return Change(rule, run, stored, holds, cursor, (observation,) if holds else ())
