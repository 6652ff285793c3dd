"""Runs: create, list, read, edit (name, tags, note, archived), delete, heartbeat, export."""

import functools
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from sqlalchemy import String, cast, func, select
from sqlalchemy.orm import Session

from callboard.server.api.answers import (
    SUMMARY_ONLY,
    CsvResponse,
    Heartbeat,
    RunDetail,
    RunsPage,
    RunSummary,
    json_problems,
    problems,
    run_detail,
    run_summary,
)
from callboard.server.api.deps import (
    Ingester,
    Reader,
    RowId,
    RunWritesDep,
    SessionDep,
    VisibleRun,
    check_project,
)
from callboard.server.api.routes.commands import requester, run_caller
from callboard.server.api.schemas import (
    MAX_BIGINT,
    Name,
    NamePart,
    RunCreate,
    RunPatch,
    RunStatus,
    Text,
)
from callboard.server.auth import Principal
from callboard.server.lifecycle import record_heartbeat
from callboard.server.store.db import json_dumps
from callboard.server.store.export import epochs_csv
from callboard.server.store.models import Project, Run
from callboard.server.store.run_edits import delete_run, edit_run
from callboard.server.store.run_listing import archive_filter
from callboard.server.store.run_writes import UidTaken, create_run

router = APIRouter(prefix="/runs", tags=["runs"])

# Each order is an index's (`ix_runs_created`, `ix_runs_updated`, `ix_runs_name`; SQLite's
# indexes end with the row id): a page is read off it, never sorted from every run.
SORTS = {
    "newest": (Run.created_at.desc(), Run.id.desc()),
    "oldest": (Run.created_at.asc(), Run.id.asc()),
    "updated": (Run.updated_at.desc(), Run.id.desc()),
    "name": (Run.name.asc(), Run.id.asc()),
}


@router.post(
    "",
    status_code=201,
    response_model=RunDetail,
    responses={
        200: {"model": RunDetail, "description": "the run this uid already names"},
        **problems(401, 403, 409, 413, 429, 503),
    },
)
async def create(
    spec: RunCreate,
    writes: RunWritesDep,
    response: Response,
    principal: Ingester,
):
    """Create a run; posting the same `uid` again returns the same run (200).

    A uid is claimed only in its run's own project (409 otherwise), by a caller
    that may write that project (403 otherwise).
    """
    check_project(principal, spec.project)
    try:
        detail, created = await writes.write(functools.partial(_create, spec=spec))
    except UidTaken as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    if not created:
        response.status_code = 200
    return detail


def _create(connection, changed, spec):
    """`create_run`, answered with the run's detail as its transaction holds it."""
    run_id, created = create_run(connection, changed, spec)
    with Session(connection) as session:  # reads only: the writer commits
        return run_detail(session.get(Run, run_id)), created


@router.get("", response_model=RunsPage, responses=problems(401, 403, 503))
def list_runs(
    session: SessionDep,
    principal: Reader,
    name: Annotated[Name | None, Query()] = None,
    project: Annotated[Name | None, Query()] = None,
    status: RunStatus | None = None,
    tag: Annotated[Text | None, Query(max_length=100)] = None,
    q: Annotated[NamePart | None, Query(description="substring of the name")] = None,
    sort: Annotated[str, Query(pattern="^(" + "|".join(SORTS) + ")$")] = "newest",
    archived: Annotated[
        bool, Query(description="list the archived runs (only them) instead of the others")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_BIGINT)] = 0,
):
    """Runs, newest first, filtered by exact name, project, status, tag or name substring.

    Archived runs are left out; `archived=true` lists them (and only them).
    """
    if principal.project is not None:
        check_project(principal, project or principal.project)
        project = principal.project
    query = select(Run).where(archive_filter(archived))
    if name is not None:
        query = query.where(Run.name == name)
    if project is not None:
        # By project id (a scalar subquery, not a join), so PostgreSQL finds the
        # project's runs through ix_runs_project_created (project_id, created_at, id).
        project_id = select(Project.id).where(Project.name == project).scalar_subquery()
        query = query.where(Run.project_id == project_id)
    if status is not None:
        query = query.where(Run.status == status)
    if q:
        query = query.where(Run.name.contains(q, autoescape=True))
    if tag:
        # Tags are a JSON list; its text holds the tag as a JSON string, as `json_dumps` wrote it.
        query = query.where(cast(Run.tags, String).contains(json_dumps(tag), autoescape=True))
    matching = query.with_only_columns(Run.id).subquery()
    total = session.scalar(select(func.count()).select_from(matching))
    page = query.options(*SUMMARY_ONLY).order_by(*SORTS[sort]).limit(limit).offset(offset)
    runs = session.scalars(page).all()
    return {
        "runs": [run_summary(run) for run in runs],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.get("/{run_id}", response_model=RunDetail, responses=problems(401, 403, 404, 503))
def read_run(run: VisibleRun, _: Reader):
    """A run: status, epochs done, last value of each metric, config, times, stop state."""
    return run_detail(run)


Editor = Annotated[Principal, Depends(run_caller("control"))]
Deleter = Annotated[Principal, Depends(run_caller("admin"))]


@router.patch("/{run_id}", response_model=RunDetail, responses=problems(401, 403, 404, 413, 503))
async def edit(run_id: RowId, patch: RunPatch, writes: RunWritesDep, principal: Editor):
    """Rename the run, replace its tags, write its note (Markdown), archive or restore it:
    each field sent, only those (a control token).

    Each change is an event on the run (`renamed`, `tagged`, `noted`, `archived`,
    `unarchived`) saying who made it, and reaches every open page live.
    """
    work = functools.partial(
        _edit, run_id=run_id, patch=patch, by=requester(principal), visible=principal.sees_project
    )
    return await writes.write(work, order=run_id)


def _edit(connection, changed, run_id, patch, by, visible):
    """`edit_run`, answered with the run's detail as its transaction holds it."""
    edit_run(connection, changed, run_id, patch, by, visible)
    with Session(connection) as session:  # reads only: the writer commits
        return run_detail(session.get(Run, run_id))


@router.delete("/{run_id}", response_model=RunSummary, responses=problems(401, 403, 404, 503))
async def delete(run_id: RowId, writes: RunWritesDep, principal: Deleter):
    """Delete the run and everything stored of it, for good (an admin token); the run it was."""
    work = functools.partial(_delete, run_id=run_id, visible=principal.sees_project)
    return await writes.write(work, order=run_id)


def _delete(connection, changed, run_id, visible):
    """`delete_run`, answered with the run's summary as it was."""
    with Session(connection) as session:  # reads only: the writer commits
        run = session.get(Run, run_id)
        summary = None if run is None else run_summary(run)
    delete_run(connection, changed, run_id, visible)  # RunNotFound: missing, or not visible
    return summary


@router.post(
    "/{run_id}/heartbeat", response_model=Heartbeat, responses=problems(401, 403, 404, 429, 503)
)
async def heartbeat(run_id: RowId, writes: RunWritesDep, principal: Ingester):
    """The client is alive; a `lost` run becomes `running` again."""
    work = functools.partial(record_heartbeat, run_id=run_id, visible=principal.sees_project)
    status = await writes.write(work, order=run_id)
    return {"status": status}


@router.get(
    "/{run_id}/export.csv",
    response_class=CsvResponse,
    responses=json_problems(401, 403, 404, 503),
)
def export_csv(run: VisibleRun, session: SessionDep, _: Reader):
    """The run's epochs as CSV, in the shape Keras's CSVLogger writes."""
    return Response(
        epochs_csv(session, run.id),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="run-{run.id}.csv"'},
    )
