"""Rules: add, list and remove them; the alerts they raised (live) and their webhook log.

`admin` manages every rule; `control` adds and removes rules of a project its
token sees; `read` sees the rules of its projects and those of every project.
Webhook URLs are answered cut and secrets never (`rule_answers`).
"""

import functools
import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from sqlalchemy import delete, func, insert, select
from starlette.concurrency import run_in_threadpool

from callboard.server.api.answers import problems
from callboard.server.api.deps import (
    Admin,
    Controller,
    DatabaseDep,
    HubDep,
    Reader,
    RowId,
    RunWritesDep,
    SessionDep,
    SettingsDep,
    still_admitted,
)
from callboard.server.api.long_poll import change_or_hang_up
from callboard.server.api.rule_answers import (
    AlertList,
    DeliveryList,
    Rule,
    RuleList,
    alert_answer,
    rule_answer,
)
from callboard.server.api.schemas import MAX_ROW_ID, Name
from callboard.server.auth import OPEN
from callboard.server.live.hub import ALERTS_CHANNEL, RULES_CHANNEL
from callboard.server.rules.deliveries import read_deliveries
from callboard.server.rules.spec import RuleIn
from callboard.server.rules.webhook_targets import refused_target
from callboard.server.store.models import Project, RuleFiring, Run
from callboard.server.store.models import Rule as RuleRow

router = APIRouter(tags=["rules"])

RULES, FIRINGS = RuleRow.__table__, RuleFiring.__table__
MAX_RULES = 1000  # evaluated on every run: a bound on the work each event brings
MAX_WAIT_SECONDS = 30.0
AlertCursor = Annotated[
    int, Query(ge=0, le=MAX_ROW_ID, description="the alert id to start after (0: the latest)")
]


def _author(principal):
    return "open mode" if principal == OPEN else principal.name


def check_may_manage(principal, project):
    """403 unless `principal` may add or remove a rule of `project` (None: every project):
    an admin token manages any rule; a token limited to one project (control, or admin)
    only rules of that project."""
    if project is None and not principal.can("admin"):
        raise HTTPException(
            status_code=403, detail="only an admin token manages rules of every project"
        )
    if not principal.sees_project(project):  # a token of one project never sees "every project"
        raise HTTPException(
            status_code=403, detail=f"this token is limited to project {principal.project!r}"
        )


def _refused_webhook(request, settings, rule):
    """A 422 naming the first webhook action whose URL may not be posted to
    (`webhook_targets.refused_target`), or None."""
    for index, action in enumerate(rule.actions):
        if action.kind != "webhook":
            continue
        if reason := refused_target(str(action.url), request, settings.public_url):
            return HTTPException(
                status_code=422,
                detail=[
                    {"loc": ["body", "actions", index, "url"], "msg": reason, "type": "value_error"}
                ],
            )
    return None


def _add_rule(connection, changed, rule, base_url, author):
    count = connection.execute(select(func.count()).select_from(RULES)).scalar_one()
    if count >= MAX_RULES:
        raise HTTPException(status_code=409, detail=f"this server holds {MAX_RULES} rules at most")
    row = connection.execute(
        insert(RULES)
        .values(
            name=rule.name,
            project=rule.project,
            condition=rule.condition.model_dump(mode="json"),
            actions=[action.model_dump(mode="json") for action in rule.actions],
            base_url=base_url,
            created_by=author,
            created_at=time.time(),
        )
        .returning(RULES)
    ).one()
    changed.also(RULES_CHANNEL)
    return row


@router.post(
    "/rules", status_code=201, response_model=Rule, responses=problems(401, 403, 409, 413, 422)
)
async def add_rule(
    request: Request,
    rule: RuleIn,
    writes: RunWritesDep,
    settings: SettingsDep,
    principal: Controller,
):
    """Watch every run of `project` (none: every project): when `condition` holds, do
    `actions` (post a webhook, send the training a command). Fires once per run and episode."""
    check_may_manage(principal, rule.project)
    if problem := _refused_webhook(request, settings, rule):
        raise problem
    base_url = settings.public_url or str(request.base_url)
    work = functools.partial(_add_rule, rule=rule, base_url=base_url, author=_author(principal))
    return rule_answer(await writes.write(work))


def _firing_counts(project=None):
    """Each rule's firings (on the runs of `project` only, when the caller is limited to it)."""
    query = select(FIRINGS.c.rule_id, func.count().label("firings")).group_by(FIRINGS.c.rule_id)
    if project is not None:
        query = (
            query.join(Run, Run.id == FIRINGS.c.run_id)
            .join(Project, Project.id == Run.project_id)
            .where(Project.name == project)
        )
    return query.subquery()


@router.get("/rules", response_model=RuleList, responses=problems(401, 403, 503))
def list_rules(session: SessionDep, principal: Reader, project: Name | None = None):
    """The rules the caller sees (those of every project, and of its projects), oldest first."""
    counts = _firing_counts(principal.project)
    query = (
        select(RULES, func.coalesce(counts.c.firings, 0).label("firings"))
        .outerjoin(counts, counts.c.rule_id == RULES.c.id)
        .order_by(RULES.c.id)
    )
    if project is not None:
        query = query.where(RULES.c.project == project)
    rows = session.execute(query).all()
    return RuleList(
        rules=[
            rule_answer(row, row.firings)
            for row in rows
            if row.project is None or principal.sees_project(row.project)
        ]
    )


def _rule_not_found(rule_id):
    return HTTPException(status_code=404, detail=f"rule {rule_id} not found")


def _seen_rule(row, rule_id, principal):
    """`row`, or a 404 when it is missing or of a project `principal` does not see."""
    if row is None or not (row.project is None or principal.sees_project(row.project)):
        raise _rule_not_found(rule_id)
    return row


def _remove_rule(connection, changed, rule_id, principal):
    found = connection.execute(select(RULES).where(RULES.c.id == rule_id)).one_or_none()
    row = _seen_rule(found, rule_id, principal)
    check_may_manage(principal, row.project)
    firings = connection.execute(
        select(func.count()).select_from(FIRINGS).where(FIRINGS.c.rule_id == rule_id)
    ).scalar_one()
    connection.execute(delete(RULES).where(RULES.c.id == rule_id))
    changed.also(RULES_CHANNEL)
    return row, firings


@router.delete("/rules/{rule_id}", response_model=Rule, responses=problems(401, 403, 404, 503))
async def remove_rule(rule_id: RowId, writes: RunWritesDep, principal: Controller):
    """Stop watching: the rule, its firings and their delivery log are removed; answers the
    rule as it was."""
    work = functools.partial(_remove_rule, rule_id=rule_id, principal=principal)
    return rule_answer(*await writes.write(work))


@router.get(
    "/rules/{rule_id}/deliveries",
    response_model=DeliveryList,
    responses=problems(401, 403, 404, 503),
)
def rule_deliveries(rule_id: RowId, session: SessionDep, principal: Admin):
    """The rule's webhook posts, newest first: state, attempts, last status and error."""
    _seen_rule(session.get(RuleRow, rule_id), rule_id, principal)
    deliveries = read_deliveries(session.connection(), rule_id=rule_id)
    if principal.project is not None:  # an every-project rule also posts about other runs
        run_ids = {delivery["run_id"] for delivery in deliveries}
        seen = set(
            session.scalars(
                select(Run.id)
                .join(Project, Project.id == Run.project_id)
                .where(Run.id.in_(run_ids), Project.name == principal.project)
            )
        )
        deliveries = [delivery for delivery in deliveries if delivery["run_id"] in seen]
    return DeliveryList(deliveries=deliveries)


def _read_alerts(database, principal, after, run_id, limit):
    """The firings `principal` may see with id > `after` (after=0: the latest `limit`)."""
    query = (
        select(
            FIRINGS,
            Run.name.label("run_name"),
            Project.name.label("project"),
            RULES.c.base_url,
        )
        .join(Run, Run.id == FIRINGS.c.run_id)
        .join(Project, Project.id == Run.project_id)
        .join(RULES, RULES.c.id == FIRINGS.c.rule_id)
    )
    if principal.project is not None:
        query = query.where(Project.name == principal.project)
    if run_id is not None:
        query = query.where(FIRINGS.c.run_id == run_id)
    if after:
        query = query.where(FIRINGS.c.id > after).order_by(FIRINGS.c.id).limit(limit)
    else:
        query = query.order_by(FIRINGS.c.id.desc()).limit(limit)
    with database.reader() as session:
        rows = session.execute(query).all()
    return sorted((alert_answer(row) for row in rows), key=lambda alert: alert.id)


@router.get("/alerts", response_model=AlertList, responses=problems(401, 403, 503))
async def alerts(
    request: Request,
    database: DatabaseDep,
    hub: HubDep,
    principal: Reader,
    after: AlertCursor = 0,
    run_id: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS, allow_inf_nan=False)] = 0.0,
):
    """What rules raised on the runs the caller sees, oldest first: those after `after`
    (`after=0`: the latest `limit`). With `wait`, waits up to that long for one (long-poll)."""
    deadline = time.monotonic() + wait
    read = functools.partial(_read_alerts, database, principal, after, run_id, limit)
    with hub.subscribe(ALERTS_CHANNEL) as subscription:  # before reading: no lost wake-up
        found = await run_in_threadpool(read)
        while not found and (left := deadline - time.monotonic()) > 0:
            woken = await change_or_hang_up(request, subscription, left)
            if woken is None:
                break
            if not await still_admitted(request, "read"):
                raise HTTPException(status_code=401, detail="this token was revoked")
            if woken:
                found = await run_in_threadpool(read)
    return AlertList(alerts=found)
