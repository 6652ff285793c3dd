"""Liveness and database reachability, for load balancers and health checks."""

from fastapi import APIRouter
from sqlalchemy import text

from callboard.server.api.answers import Health, problems
from callboard.server.api.deps import SessionDep

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, responses=problems(503))
def health(session: SessionDep):
    """`{"status": "ok", "database": <dialect>}` when the database answers."""
    session.execute(text("SELECT 1"))
    return {"status": "ok", "database": session.bind.dialect.name}
