"""plotly.js for the dashboard, from the installed `plotly` package: never a CDN or a copy.

The bundle (4.8 MB) is read once and answered from memory: gzipped (about 1.4 MB,
compressed once, in the background while the server starts) to a browser that
accepts gzip, as is to one that doesn't. Its URL
holds plotly's version (`?v=`), so a browser keeps it for a year without asking again.

One line goes before the package's bytes: `//# allFunctionsCalledOnLoad`, V8's
explicit compile hint (Chromium 136 on). Chromium then compiles every function of the
bundle on a background thread while the bytes arrive, instead of on the page's main
thread the first time each one runs: plotly runs nearly all of them while it starts
and draws the first chart. Other browsers read a comment.
"""

import asyncio
import contextlib
import functools
import gzip
import importlib.metadata
import importlib.resources

from fastapi import APIRouter, Request
from fastapi.responses import Response

PLOTLY_VERSION = importlib.metadata.version("plotly")
COMPILE_HINT = b"//# allFunctionsCalledOnLoad\n"
CACHE_FOREVER = "public, max-age=31536000, immutable"


def plotly_js():
    """plotly.min.js as the installed `plotly` Python package ships it."""
    return importlib.resources.files("plotly") / "package_data" / "plotly.min.js"


@functools.cache
def bundle_bytes():
    """The bytes served: the compile hint, then the package's plotly.min.js."""
    return COMPILE_HINT + plotly_js().read_bytes()


@functools.cache
def gzipped_bundle():
    """`bundle_bytes()` gzipped, once per process."""
    return gzip.compress(bundle_bytes(), compresslevel=9, mtime=0)


@contextlib.asynccontextmanager
async def compress_while_starting(app):
    """Gzip the bundle on a thread as the server starts, not while the first browser waits."""
    compressing = asyncio.create_task(asyncio.to_thread(gzipped_bundle))
    try:
        yield
    finally:
        await compressing


router = APIRouter(include_in_schema=False, lifespan=compress_while_starting)


def accepts_gzip(accept_encoding):
    """Whether an `Accept-Encoding` header allows gzip (`gzip` or `*`, without `q=0`)."""
    allowed = {}
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.partition(";")
        quality = 1.0
        name, _, value = params.strip().partition("=")
        if name.strip() == "q":
            try:
                quality = float(value)
            except ValueError:
                quality = 0.0
        allowed[coding.strip()] = quality > 0
    return allowed.get("gzip", allowed.get("*", False))


@router.get("/vendor/plotly.min.js")
def plotly_bundle(request: Request):
    """The charting library, gzipped where the browser accepts it."""
    headers = {"Cache-Control": CACHE_FOREVER, "Vary": "Accept-Encoding"}
    if accepts_gzip(request.headers.get("accept-encoding", "")):
        headers["Content-Encoding"] = "gzip"
        return Response(gzipped_bundle(), media_type="text/javascript", headers=headers)
    return Response(bundle_bytes(), media_type="text/javascript", headers=headers)
