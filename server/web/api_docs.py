"""The API docs: Swagger UI from the installed `swagger-ui-bundle-v2` package, and the schema.

`/docs` needs nothing from another host (its CSP is the dashboard's strict one: no
inline script, no outside host) and, like the API, once tokens exist it is for
readers only: `/openapi.json` answers a read token or a dashboard session, and
a browser without a session is sent to sign in before `/docs`.
"""

from pathlib import Path

import swagger_ui_bundle
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse

from callboard.server.api.deps import Reader
from callboard.server.api.fast_path import json_answer
from callboard.server.web.login import PageReader
from callboard.server.web.templating import templates

router = APIRouter(include_in_schema=False)
SWAGGER_UI = Path(swagger_ui_bundle.swagger_ui_path)
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


@router.get("/openapi.json")
async def openapi_schema(request: Request, _: Reader):
    """The OpenAPI description of every route: the whole contract."""
    schema = request.app.openapi()
    root = request.scope.get("root_path", "").rstrip("/")
    if root:
        schema = {**schema, "servers": [{"url": root}]}
    return json_answer(schema)


@router.get("/docs", response_class=HTMLResponse)
def docs_page(request: Request, reader: PageReader):
    """Swagger UI on `/openapi.json`."""
    return templates.TemplateResponse(
        request,
        "docs.html",
        {"root": request.scope.get("root_path", ""), "csrf_token": reader.csrf_token or ""},
    )


@router.get("/docs/assets/{name}")
def docs_asset(name: str):
    """Swagger UI's script, style and icon, from the installed package."""
    if name not in ASSETS:
        raise HTTPException(status_code=404, detail=f"no docs asset {name!r}")
    return FileResponse(
        SWAGGER_UI / name,
        media_type=ASSETS[name],
        headers={"Cache-Control": "public, max-age=86400"},
    )
