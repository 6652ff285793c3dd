"""A rule's standing on a run changes: stored compare-and-set, and a firing does its actions.

`record_standing` is work for `RunWrites.write`. The state row's `version`
makes the change compare-and-set: of two replicas judging the same run at
once, one changes it and the other finds the version moved and does nothing,
so a firing (its `rule_fired` event, its commands, its webhook posts) happens
once per run and condition episode; `uq_rule_firings_episode` guards it too.
"""

import json
import time
from dataclasses import dataclass

from sqlalchemy import insert, select, update

from callboard.server.commands import CommandRefused, issue_command
from callboard.server.live.hub import ALERTS_CHANNEL
from callboard.server.metric_keys import LEARNING_RATE_KEYS
from callboard.server.rules.deliveries import add_delivery, cut_url
from callboard.server.store.models import RuleFiring, RuleState
from callboard.server.store.run_writes import RUNS, add_server_event, dialect_insert
from callboard.server.store.storable import encode_number

STATES, FIRINGS = RuleState.__table__, RuleFiring.__table__


def run_page(base_url, run_id):
    """The address of run `run_id`'s page on the dashboard at `base_url`."""
    return f"{(base_url or '').rstrip('/')}/runs/{run_id}"


@dataclass(frozen=True)
class Standing:
    """Where a rule stands on a run, as stored: `version` None when no row exists yet."""

    active: bool = False
    episode: int = 0
    cursor: int | None = None
    version: int | None = None


def record_standing(connection, changed, rule, run, before, active, cursor, observations=()):
    """Move rule `rule`'s standing on `run` from `before` to `active` (with `cursor`), firing
    once for each of `observations` (an episode begun each). Returns the new `Standing` and
    the number of webhook posts queued, or None when another writer moved the standing
    first (nothing is done then).

    `rule` is a loaded rule (`id`, `name`, `actions`, `base_url`); `run` a row with `id`,
    `name` and `project`.
    """
    episode = before.episode + len(observations)
    after = Standing(active, episode, cursor, (before.version or 0) + 1)
    values = {"active": active, "episode": episode, "cursor": cursor, "version": after.version}
    if before.version is None:
        moved = connection.execute(
            dialect_insert(connection, STATES).on_conflict_do_nothing(),
            {"rule_id": rule.id, "run_id": run.id, **values},
        ).rowcount
    else:
        moved = connection.execute(
            update(STATES)
            .where(
                STATES.c.rule_id == rule.id,
                STATES.c.run_id == run.id,
                STATES.c.version == before.version,
            )
            .values(values)
        ).rowcount
    if not moved:
        return None
    webhooks = 0
    for number, observation in enumerate(observations, start=before.episode + 1):
        webhooks += _fire(connection, changed, rule, run, number, observation)
    return after, webhooks


def _fire(connection, changed, rule, run, episode, observation):
    """Store the firing, do its actions, record it on the run; return the webhooks queued."""
    now = time.time()
    value = None if observation.value is None else str(encode_number(observation.value))
    firing_id = connection.execute(
        insert(FIRINGS)
        .values(
            rule_id=rule.id,
            run_id=run.id,
            episode=episode,
            rule_name=rule.name,
            message=observation.message,
            metric=observation.metric,
            value=value,
            epoch=observation.epoch,
            done=[],
            fired_at=now,
        )
        .returning(FIRINGS.c.id)
    ).scalar_one()
    body = _webhook_body(rule, run, firing_id, episode, observation, now)
    done, webhooks = [], 0
    for index, action in enumerate(rule.actions):
        if action.kind == "webhook":
            add_delivery(connection, firing_id, index, str(action.url), body, action.secret, now)
            done.append(f"webhook {cut_url(str(action.url))} queued")
            webhooks += 1
        else:
            done.append(_send_command(connection, changed, rule, run, action, observation))
    connection.execute(update(FIRINGS).where(FIRINGS.c.id == firing_id).values(done=done))
    data = {
        "rule_id": rule.id,
        "rule_name": rule.name,
        "message": observation.message,
        "metric": observation.metric,
        "value": None if observation.value is None else encode_number(observation.value),
        "epoch": observation.epoch,
        "done": done,
    }
    add_server_event(connection, changed, run.id, "rule_fired", data)
    changed.also(ALERTS_CHANNEL)
    return webhooks


def _send_command(connection, changed, rule, run, action, observation):
    """Issue `action`'s command to the run; say what happened, in a few words."""
    value = action.value
    if action.factor is not None:
        current = _learning_rate(connection, run.id)
        if current is None:
            return f"command {action.command} not sent: the run reports no learning rate"
        value = current * action.factor
    try:
        command = issue_command(
            connection,
            changed,
            run.id,
            action.command,
            value=value,
            reason=f"{rule.name}: {observation.message}",
            by=f"rule {rule.name}"[:200],
        )
    except CommandRefused:
        return f"command {action.command} not sent: the run has ended"
    shown = "" if value is None else f" {value:.6g}"
    return f"command {action.command}{shown} requested (command {command.id})"


def _learning_rate(connection, run_id):
    """The run's latest learning rate, from its summary (`{key: [step, value]}`), if finite."""
    summary = connection.execute(select(RUNS.c.summary).where(RUNS.c.id == run_id)).scalar()
    for key in LEARNING_RATE_KEYS:
        found = (summary or {}).get(key)
        if found and isinstance(found[1], int | float) and found[1] > 0:
            return float(found[1])
    return None


def _webhook_body(rule, run, firing_id, episode, observation, now):
    """The JSON every post of this firing sends: Slack's `text`, and the facts as fields."""
    url = run_page(rule.base_url, run.id)
    text = f"Callboard: rule {rule.name!r} fired on run {run.name!r} ({run.project}): "
    return json.dumps(
        {
            "text": f"{text}{observation.message}. {url}",
            "rule": {"id": rule.id, "name": rule.name},
            "run": {"id": run.id, "name": run.name, "project": run.project, "url": url},
            "metric": observation.metric,
            "value": None if observation.value is None else encode_number(observation.value),
            "epoch": observation.epoch,
            "message": observation.message,
            "episode": episode,
            "firing_id": firing_id,
            "fired_at": now,
        },
        allow_nan=False,
    )
