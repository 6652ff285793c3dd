"""The dashboard: server-rendered pages (runs, run, compare) and their static assets.

Once a token exists, a browser signs in first (`web/login.py`). Pages
render what the server knows at request time; the plain JS in `static/`
draws the charts and keeps everything live over server-sent events. Templates
hold no inline script: data reaches the JS through `data-*` attributes.
"""

import json
import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import func, select

from callboard.server.api.answers import SUMMARY_ONLY, run_detail
from callboard.server.api.deps import RowId, SessionDep, parse_row_id, visible_run
from callboard.server.api.routes.rules import list_rules
from callboard.server.commands import KINDS
from callboard.server.metric_keys import main_metric
from callboard.server.rules.spec import METRIC_CONDITIONS, WATCHED_STATUSES
from callboard.server.rules.wording import WORDING, action_in_words, condition_in_words
from callboard.server.store.models import RUN_STATUSES, Event, Project, Run
from callboard.server.store.run_listing import archive_filter
from callboard.server.web import bundle, login
from callboard.server.web.login import PageReader
from callboard.server.web.templating import STATIC_DIR, templates

MAX_COMPARED = 50  # runs one compare page overlays
RECENT_CANDIDATES = 50  # the newest runs its picker offers besides those compared
CONDITION_KINDS = tuple(WORDING)  # nan, above, below, plateau, worse_than_median, status, silent

router = APIRouter(include_in_schema=False)
router.include_router(login.router)
router.include_router(bundle.router)


class DashboardStatic(StaticFiles):
    """Static files the browser revalidates every time (a cheap 304): never a stale script."""

    def file_response(self, *args, **kwargs):
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


def static_files():
    """The `/static` mount."""
    return DashboardStatic(directory=STATIC_DIR)


def flatten(config, prefix=""):
    """`{"a": {"b": 1}}` → `{"a.b": "1"}`: nested config as dotted keys and display strings."""
    rows = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows.update(flatten(value, name + "."))
        else:
            rows[name] = value if isinstance(value, str) else json.dumps(value)
    return rows


def render(request, template, principal, status_code=200, **context):
    return templates.TemplateResponse(
        request,
        template,
        {
            "root": request.scope.get("root_path", ""),
            "plotly_version": bundle.PLOTLY_VERSION,
            "csrf_token": principal.csrf_token or "",
            "signed_in": principal.name if principal.csrf_token else "",
            "can_control": principal.can("control"),
            "can_admin": principal.can("admin"),
            **context,
        },
        status_code=status_code,
    )


def _visible_run(session, principal, run_id):
    """`deps.visible_run`, or None where the API answers 404."""
    try:
        return visible_run(session, run_id, principal)
    except HTTPException:
        return None


@router.get("/", response_class=HTMLResponse)
def runs_page(
    request: Request,
    session: SessionDep,
    principal: PageReader,
    project: str = "",
    status: str = "",
    q: str = "",
    tag: str = "",
    sort: str = "newest",
):
    """Every run, live: status, main metric and its sparkline, filters and sort."""
    projects = visible_projects(session, principal)
    filters = {"project": project, "status": status, "q": q, "tag": tag, "sort": sort}
    return render(
        request,
        "runs.html",
        principal,
        projects=projects,
        statuses=RUN_STATUSES,
        filters=filters,
        now=time.time(),
    )


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: RowId, session: SessionDep, principal: PageReader):
    """One run: charts, progress, events, config, and the Stop button."""
    run = _visible_run(session, principal, run_id)
    if run is None:
        return render(request, "not_found.html", principal, 404, what=f"run {run_id}")
    last_event_id = session.scalar(select(func.max(Event.id)).where(Event.run_id == run.id))
    detail = run_detail(run).model_dump(mode="json")
    return render(
        request,
        "run.html",
        principal,
        run=detail,
        config_rows=flatten(detail["config"]),
        last_event_id=last_event_id or 0,
    )


def parse_ids(values):
    """`["1,2", "3"]` → `[1, 2, 3]`: ids from `?ids=1,2` or repeated `?ids=` (form checkboxes).

    Parts that are not run ids (`x`, `²`, `0`, beyond `MAX_ROW_ID`) are left out.
    """
    ids = []
    for value in values:
        for part in value.split(","):
            run_id = parse_row_id(part.strip())
            if run_id is not None and run_id not in ids:
                ids.append(run_id)
    return ids[:MAX_COMPARED]


def config_differences(runs):
    """Rows `(key, [value per run], differs)` over the union of the runs' flattened configs."""
    flat = [flatten(run.config or {}) for run in runs]
    keys = sorted({key for config in flat for key in config})
    rows = []
    for key in keys:
        values = [config.get(key) for config in flat]
        rows.append((key, values, len(set(values)) > 1))
    return rows


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    session: SessionDep,
    principal: PageReader,
    ids: Annotated[list[str] | None, Query()] = None,
):
    """Runs side by side: one metric overlaid, best values, config differences."""
    found = (_visible_run(session, principal, run_id) for run_id in parse_ids(ids or []))
    runs = [run for run in found if run is not None]
    chosen = {run.id for run in runs}
    differences = config_differences(runs)
    candidates = runs + [run for run in recent_runs(session, principal) if run.id not in chosen]
    return render(
        request,
        "compare.html",
        principal,
        runs=runs,
        details=[run_detail(run).model_dump(mode="json") for run in runs],  # for compare.js
        candidates=candidates,
        chosen=chosen,
        differences=differences,
        differing=sum(1 for _key, _values, differs in differences if differs),
        ids=",".join(str(run.id) for run in runs),
        main_metric=main_metric({key for run in runs for key in run.summary or {}}) or "",
    )


def recent_runs(session, principal):
    """The newest `RECENT_CANDIDATES` runs `principal` sees (a project token: its project's),
    read off `ix_runs_created` or `ix_runs_project_created`, however many runs there are."""
    query = select(Run).options(*SUMMARY_ONLY).where(archive_filter(archived=False))
    if principal.project is not None:
        project_id = select(Project.id).where(Project.name == principal.project)
        query = query.where(Run.project_id == project_id.scalar_subquery())
    newest_first = (Run.created_at.desc(), Run.id.desc())
    return session.scalars(query.order_by(*newest_first).limit(RECENT_CANDIDATES)).all()


def visible_projects(session, principal):
    """The names of the projects `principal` sees, in order."""
    names = session.scalars(select(Project.name).order_by(Project.name)).all()
    return [name for name in names if principal.sees_project(name)]


def rule_shown(rule):
    """A `Rule` answer as the rules page lists it: its JSON plus its condition and actions in
    the words the command line prints (`rules.wording`)."""
    answer = rule.model_dump(mode="json")
    answer["condition_words"] = condition_in_words(answer["condition"])
    answer["action_words"] = [action_in_words(action) for action in answer["actions"]]
    return answer


@router.get("/rules", response_class=HTMLResponse)
def rules_page(
    request: Request,
    session: SessionDep,
    principal: PageReader,
    project: str = "",
    metric: str = "",
):
    """The rules the viewer sees, a form to add one (`?project=&metric=` fill it in: the run
    page's "Watch this run"), and the alerts they raised, live."""
    return render(
        request,
        "rules.html",
        principal,
        rules=[rule_shown(rule) for rule in list_rules(session, principal).rules],
        projects=visible_projects(session, principal),
        token_project=principal.project or "",
        prefill={"project": project or principal.project or "", "metric": metric},
        condition_kinds=CONDITION_KINDS,
        metric_kinds=" ".join(kind for kind in CONDITION_KINDS if kind in METRIC_CONDITIONS),
        watched_statuses=WATCHED_STATUSES,
        command_kinds=KINDS,
    )
