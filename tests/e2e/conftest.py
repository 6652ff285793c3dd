"""Browser fixtures: Debian's Chromium driven by Playwright, a screenshot of every failure.

Without /usr/bin/chromium the browser tests skip, unless CALLBOARD_REQUIRE_BROWSER=1
(as in CI), where a missing browser is a failure.
"""

import os
import re
from pathlib import Path

import pytest

from bench.browser import CHROMIUM, launch_chromium

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures can see whether it failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


def save_screenshot(page, name, folder=ARTIFACTS):
    """Save a full-page screenshot as `folder/<name>.png`; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") + ".png")
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(scope="package")
def browser():
    """One Chromium for the browser tests. Package-scoped: Playwright's sync API keeps an
    event loop running on the main thread while it is open, which `asyncio.run` in later
    tests refuses."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CALLBOARD_REQUIRE_BROWSER"):
            pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium")
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


class BrowserProblems:
    """Console errors, uncaught exceptions and requests to other hosts seen by a page."""

    def __init__(self, page):
        self.errors = []
        self.external = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("request", self._request)

    def _console(self, message):
        if message.type == "error":
            self.errors.append(message.text)

    def _request(self, request):
        if not request.url.startswith(("http://127.0.0.1:", "data:", "blob:")):
            self.external.append(request.url)


def _open_page(browser, request, **context_args):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, **context_args)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.problems = BrowserProblems(page)
    return context, page


def _close_page(context, page, request):
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        try:
            path = save_screenshot(page, request.node.nodeid)
            print(f"screenshot of the failure: {path}")
        except Exception as exc:  # the page may be gone; the failure itself matters more
            print(f"no screenshot: {exc!r}")
    context.close()


@pytest.fixture
def page(browser, request):
    """A fresh browser page (light colour scheme); screenshot to test-artifacts/ on failure."""
    context, page = _open_page(browser, request, color_scheme="light")
    yield page
    _close_page(context, page, request)


@pytest.fixture
def dark_page(browser, request):
    """A fresh browser page whose system prefers a dark colour scheme."""
    context, page = _open_page(browser, request, color_scheme="dark")
    yield page
    _close_page(context, page, request)
