"""Typed dependencies shared by the routes."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from .db import Database
from .live import LiveHub
from .models import Run
from .settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_database(request: Request) -> Database:
    return request.app.state.database


def get_hub(request: Request) -> LiveHub:
    return request.app.state.hub


def get_session(database: Annotated[Database, Depends(get_database)]) -> Iterator[Session]:
    with database.reader() as session:
        yield session


def get_write_session(database: Annotated[Database, Depends(get_database)]) -> Iterator[Session]:
    """A session whose transaction holds the write lock (SQLite) from its start."""
    with database.writer() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
HubDep = Annotated[LiveHub, Depends(get_hub)]
SessionDep = Annotated[Session, Depends(get_session)]
WriteSessionDep = Annotated[Session, Depends(get_write_session)]


def get_run(run_id: int, session: SessionDep) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise HTTPException(status_code=404, detail=f"run {run_id} not found")
    return run


RunDep = Annotated[Run, Depends(get_run)]
