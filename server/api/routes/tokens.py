"""API tokens: create (the secret is shown once), list, revoke. Admin only.

An admin token scoped to a project manages only that project's tokens: it
creates tokens for its project alone, lists them, and revokes them; other
tokens do not exist for it (404). Unscoped admins manage every token.
"""

import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Request
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from callboard.server.api.answers import NewToken, Token, TokenList, problems
from callboard.server.api.deps import Admin, RowId, SessionDep, WriteSessionDep
from callboard.server.api.schemas import Name, Strict
from callboard.server.auth import ROLES, create_token
from callboard.server.store.models import ApiToken

router = APIRouter(prefix="/tokens", tags=["tokens"])


class TokenCreate(Strict):
    name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")]
    role: Annotated[str, Field(pattern="^(" + "|".join(ROLES) + ")$")]
    project: Name | None = None


def token_view(token):
    return {
        "id": token.id,
        "name": token.name,
        "role": token.role,
        "project": token.project,
        "prefix": token.prefix,
        "created_at": token.created_at,
        "revoked_at": token.revoked_at,
    }


def project_for_new_token(spec, admin):
    """The project of the token `admin` asks for: a scoped admin's own project, or 403."""
    if admin.project is None:
        return spec.project
    if "project" not in spec.model_fields_set:
        return admin.project
    if spec.project != admin.project:
        wanted = "an unscoped token" if spec.project is None else f"project {spec.project!r}"
        raise HTTPException(
            status_code=403,
            detail=f"this admin token is limited to project {admin.project!r}: "
            f"it cannot create {wanted}",
        )
    return spec.project


@router.post(
    "", status_code=201, response_model=NewToken, responses=problems(401, 403, 409, 413, 503)
)
def create(admin: Admin, spec: TokenCreate, session: WriteSessionDep, request: Request):
    """Create a token; the answer's `token` is the only time the secret is shown.

    A project-scoped admin creates tokens for its own project only (the default).
    """
    project = project_for_new_token(spec, admin)
    try:
        token, secret = create_token(session, spec.name, spec.role, project)
        session.commit()
    except IntegrityError:
        raise HTTPException(status_code=409, detail=f"a token named {spec.name!r} exists") from None
    request.app.state.tokens.invalidate()
    return {**token_view(token), "token": secret}


@router.get("", response_model=TokenList, responses=problems(401, 403, 503))
def list_tokens(admin: Admin, session: SessionDep):
    """Every token, oldest first; a project-scoped admin sees its project's only."""
    query = select(ApiToken).order_by(ApiToken.id)
    if admin.project is not None:
        query = query.where(ApiToken.project == admin.project)
    return {"tokens": [token_view(t) for t in session.scalars(query)]}


@router.delete("/{token_id}", response_model=Token, responses=problems(401, 403, 404, 503))
def revoke(admin: Admin, token_id: RowId, session: WriteSessionDep, request: Request):
    """Revoke a token; it stops working on every replica within seconds."""
    token = session.get(ApiToken, token_id)
    if token is None or not admin.sees_project(token.project):
        raise HTTPException(status_code=404, detail=f"token {token_id} not found")
    token.revoked_at = token.revoked_at or time.time()
    session.commit()
    request.app.state.tokens.invalidate()
    return token_view(token)
