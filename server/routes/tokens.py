"""API tokens: create (the secret is shown once), list, revoke. Admin only."""

import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..auth import ROLES, create_token
from ..deps import RowId, SessionDep, WriteSessionDep, require
from ..models import ApiToken
from ..schemas import Name, Strict

router = APIRouter(prefix="/tokens", tags=["tokens"], dependencies=[Depends(require("admin"))])


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


@router.post("", status_code=201)
def create(spec: TokenCreate, session: WriteSessionDep, request: Request):
    """Create a token; the answer's `token` is the only time the secret is shown."""
    try:
        token, secret = create_token(session, spec.name, spec.role, spec.project)
        session.commit()
    except IntegrityError:
        raise HTTPException(status_code=409, detail=f"a token named {spec.name!r} exists") from None
    request.app.state.tokens.invalidate()
    return {**token_view(token), "token": secret}


@router.get("")
def list_tokens(session: SessionDep):
    return {
        "tokens": [token_view(t) for t in session.scalars(select(ApiToken).order_by(ApiToken.id))]
    }


@router.delete("/{token_id}")
def revoke(token_id: RowId, session: WriteSessionDep, request: Request):
    """Revoke a token; it stops working on every replica within seconds."""
    token = session.get(ApiToken, token_id)
    if token is None:
        raise HTTPException(status_code=404, detail=f"token {token_id} not found")
    token.revoked_at = token.revoked_at or time.time()
    session.commit()
    request.app.state.tokens.invalidate()
    return token_view(token)
