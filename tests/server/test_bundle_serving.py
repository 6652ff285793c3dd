"""plotly.js as the dashboard serves it: the installed package's bytes behind V8's compile
hint, gzipped for browsers that accept gzip, cached for a year under a versioned URL."""

import gzip
import importlib.resources
import time

import pytest
from fastapi.testclient import TestClient

from callboard.server.main import create_app
from callboard.server.web.bundle import COMPILE_HINT, accepts_gzip, gzipped_bundle
from tests.server.helpers import create_run

BUNDLE = "/vendor/plotly.min.js"


@pytest.fixture(scope="module")
def shipped():
    return (importlib.resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()


def test_a_gzip_browser_gets_the_package_bytes_gzipped_behind_the_compile_hint(api, shipped):
    answer = api.get(BUNDLE, headers={"Accept-Encoding": "gzip, deflate, br"})
    assert answer.status_code == 200
    assert answer.headers["content-encoding"] == "gzip"
    assert int(answer.headers["content-length"]) < len(shipped) / 2
    assert answer.content == COMPILE_HINT + shipped  # httpx decoded the gzip
    assert answer.content.startswith(b"//# allFunctionsCalledOnLoad\n")
    assert answer.headers["content-type"].startswith("text/javascript")
    assert answer.headers["vary"] == "Accept-Encoding"
    assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"


@pytest.mark.parametrize("accept", ["identity", "gzip;q=0", "br", ""])
def test_a_browser_that_refuses_gzip_gets_plain_bytes(api, shipped, accept):
    answer = api.get(BUNDLE, headers={"Accept-Encoding": accept})
    assert answer.status_code == 200
    assert "content-encoding" not in answer.headers
    assert answer.content == COMPILE_HINT + shipped
    assert int(answer.headers["content-length"]) == len(COMPILE_HINT + shipped)
    assert answer.headers["vary"] == "Accept-Encoding"


def test_the_gzip_answer_is_a_plain_gzip_stream(api, shipped):
    raw = api.get(BUNDLE, headers={"Accept-Encoding": "gzip"}).read()
    with api.stream("GET", BUNDLE, headers={"Accept-Encoding": "gzip"}) as answer:
        compressed = b"".join(answer.iter_raw())
    assert raw == COMPILE_HINT + shipped
    assert gzip.decompress(compressed) == COMPILE_HINT + shipped


def test_the_server_gzips_the_bundle_as_it_starts_before_any_browser_asks(settings):
    gzipped_bundle.cache_clear()
    with TestClient(create_app(settings)) as api:
        deadline = time.monotonic() + 30
        while gzipped_bundle.cache_info().currsize == 0:
            assert time.monotonic() < deadline, "the bundle was not gzipped at start"
            time.sleep(0.01)
        assert gzipped_bundle.cache_info().misses == 1
        api.get(BUNDLE, headers={"Accept-Encoding": "gzip"})
        assert gzipped_bundle.cache_info().misses == 1


def test_pages_ask_for_the_bundle_under_plotlys_version(api):
    import plotly

    html = api.get(f"/runs/{create_run(api)}").text
    assert f'{BUNDLE}?v={plotly.__version__}"' in html


@pytest.mark.parametrize(
    ("header", "gzip_ok"),
    [
        ("gzip", True),
        ("GZIP", True),
        ("deflate, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip; q=0.0", False),
        ("*", True),
        ("*;q=0", False),
        ("gzip;q=0, *", False),
        ("br, *;q=0.1", True),
        ("gzip;q=nonsense", False),
        ("identity", False),
        ("", False),
    ],
)
def test_accept_encoding_is_read_with_its_quality_values(header, gzip_ok):
    assert accepts_gzip(header) is gzip_ok
