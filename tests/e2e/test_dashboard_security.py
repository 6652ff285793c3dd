"""The dashboard behind tokens, in a real Chromium against a real server: sign-in,
script-y run names that must stay text, CSRF on Stop, and roles on the Stop button."""

import html
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.server.test_auth import make_token
from tests.server_process import ServerProcess

from .test_training import unique

SENTINEL = '<img src=x onerror="window.__xss=1">'
ALERT = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>window.__xss=2</script>"
ROLES = ("ingest", "read", "control", "admin")


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """A real server with one token per role; `tokens[role]` is the secret."""
    url = f"sqlite:///{tmp_path_factory.mktemp('secure') / 'secure.db'}"
    tokens = {role: make_token(url, f"{role}-token", role) for role in ROLES}
    server = ServerProcess(url).start()
    yield server, tokens
    server.stop()


def admin_client(server, tokens):
    return httpx.Client(
        base_url=server.root, headers={"Authorization": f"Bearer {tokens['admin']}"}, timeout=10
    )


def running_run(server, tokens, name, **fields):
    """A running run with two epochs of `loss` (plus `metrics`): its id."""
    metrics = fields.pop("metrics", {})
    with admin_client(server, tokens) as client:
        run = client.post("/api/v1/runs", json={"name": name, "project": "secure", **fields})
        run.raise_for_status()
        run_id = run.json()["id"]
        events = [
            {"seq": 1 + e, "kind": "epoch_end", "epoch": e, "metrics": {"loss": 1.0, **metrics}}
            for e in range(2)
        ]
        client.post(f"/api/v1/runs/{run_id}/events", json={"events": events}).raise_for_status()
    return run_id


def control_state(server, tokens, run_id):
    with admin_client(server, tokens) as client:
        return client.get(f"/api/v1/runs/{run_id}/control").json()["state"]


def sign_in(page, root, token, path="/"):
    """Visit `path`, get sent to the sign-in form, sign in with `token`."""
    page.goto(root + path)
    page.wait_for_url(re.compile(r"/login\?next="))
    page.fill("#login-token", token)
    page.click("#login-submit")


def session_cookie(page):
    return next(c for c in page.context.cookies() if c["name"] == "callboard_session")


def test_sign_in_flow_with_a_read_token(secured, page):
    server, tokens = secured
    run_id = running_run(server, tokens, unique("signed"))
    page.goto(f"{server.root}/runs/{run_id}")
    assert page.url == f"{server.root}/login?next=%2Fruns%2F{run_id}"
    assert page.locator("#login-token").get_attribute("type") == "password"
    assert page.locator("label[for=login-token]").text_content() == "API token"
    # A wrong token: the form again, with a message that says no more than that.
    page.fill("#login-token", "cb_not-a-real-token")
    with page.expect_response(lambda r: r.url.endswith("/login")) as answer:
        page.click("#login-submit")
    assert answer.value.status == 401
    assert "not valid" in page.locator("#login-message").text_content()
    assert page.context.cookies() == []
    # An ingest token can send data, not view it.
    page.fill("#login-token", tokens["ingest"])
    with page.expect_response(lambda r: r.url.endswith("/login")) as answer:
        page.click("#login-submit")
    assert answer.value.status == 403
    assert "ingest token" in page.locator("#login-message").text_content()
    # The read token lands on the page first asked for.
    page.problems.errors.clear()  # the browser logged the 401 and 403 answers above
    page.fill("#login-token", tokens["read"])
    page.click("#login-submit")
    page.wait_for_url(f"{server.root}/runs/{run_id}")
    page.wait_for_selector("body[data-charts-ready=true]")
    assert page.locator("#signed-in-as").text_content() == "read-token"
    cookie = session_cookie(page)
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/" and cookie["secure"] is False and cookie["expires"] > 0
    assert page.evaluate("() => document.cookie") == ""
    # Read-only: Stop is disabled, and says why.
    stop = page.locator("#stop-button")
    assert stop.is_disabled()
    assert "control" in stop.get_attribute("title")
    assert page.problems.errors == [] and page.problems.external == []
    # Sign out: the session is gone, and the pages ask to sign in again.
    page.click("#sign-out")
    page.wait_for_url(re.compile(r"/login$"))
    assert [c["name"] for c in page.context.cookies()] == []
    page.goto(f"{server.root}/compare")
    assert page.url == f"{server.root}/login?next=%2Fcompare"


def test_control_session_stops_a_run_from_the_dashboard(secured, page):
    server, tokens = secured
    run_id = running_run(server, tokens, unique("stoppable"))
    sign_in(page, server.root, tokens["control"], f"/runs/{run_id}")
    page.wait_for_url(f"{server.root}/runs/{run_id}")
    page.wait_for_selector("body[data-charts-ready=true]")
    assert page.locator("#signed-in-as").text_content() == "control-token"
    page.click("#stop-button")
    page.fill("#stop-reason", "from a control session")
    with page.expect_response(lambda r: r.url.endswith("/stop")) as answer:
        page.click("#stop-confirm")
    assert answer.value.status == 200
    assert answer.value.request.header_value("x-csrf-token")
    page.wait_for_selector("#stop-steps[data-state=requested]")
    assert control_state(server, tokens, run_id) == "requested"
    assert page.problems.errors == []


def test_script_markup_in_run_fields_stays_text(secured, page):
    server, tokens = secured
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    name = f"{SENTINEL} {unique('xss')}"
    evil = running_run(
        server,
        tokens,
        name,
        tags=[ALERT, SCRIPT],
        config={ALERT: SCRIPT, "nested": {SENTINEL: ALERT}},
        host=SCRIPT,
        metrics={ALERT: 2.0, f"val_{SENTINEL}": 3.0},
    )
    plain = running_run(server, tokens, unique("plain"), config={ALERT: 1})
    with admin_client(server, tokens) as client:
        client.post(
            f"/api/v1/runs/{evil}/events",
            json={"events": [{"seq": 9, "kind": "checkpoint_saved", "data": {"path": ALERT}}]},
        ).raise_for_status()
    sign_in(page, server.root, tokens["read"])
    page.wait_for_url(f"{server.root}/")
    page.wait_for_selector("body[data-ready=true]")
    row = page.locator(f"tr.run-row[data-run-id='{evil}']")
    row.wait_for()
    assert name in row.text_content()
    assert_no_injection(page, dialogs)

    page.goto(f"{server.root}/runs/{evil}")
    page.wait_for_selector("body[data-charts-ready=true]")
    assert page.locator("#run-name").text_content() == name
    assert page.locator(".run-meta .tag").all_text_contents() == [ALERT, SCRIPT]
    page.locator("#timeline li[data-kind=checkpoint_saved]").wait_for()
    assert ALERT in page.locator("table.kv").first.text_content()
    assert_no_injection(page, dialogs)

    page.goto(f"{server.root}/compare?ids={evil},{plain}")
    page.wait_for_selector("body[data-charts-ready=true]")
    assert ALERT in page.locator("#config-diff").text_content()
    assert_no_injection(page, dialogs)
    # Escaped in the HTML the server sent, not only harmless in the DOM.
    source = httpx.get(
        f"{server.root}/runs/{evil}", headers={"Authorization": f"Bearer {tokens['read']}"}
    ).text
    assert "<img" not in source and "<script>window" not in source
    assert "&lt;img src=x onerror=" in source


def assert_no_injection(page, dialogs):
    assert dialogs == []
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("img[src=x]").count() == 0
    assert page.locator("script:not([src])").count() == 0
    # An injected handler would also be refused by the CSP, which logs an error.
    assert page.problems.errors == [], page.problems.errors


class AttackerSite:
    """A page on another origin (another port) that posts to the dashboard on load."""

    def __init__(self, pages):
        self.pages = pages
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = site.pages.get(self.path, "").encode()
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.root = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def auto_post(action, fields, enctype="application/x-www-form-urlencoded", before=""):
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in fields.items()
    )
    return (
        f'<!doctype html><form id="f" method="post" action="{action}" enctype="{enctype}">'
        f"{inputs}</form><script>(async () => {{ {before} "
        "document.getElementById('f').submit(); })();</script>"
    )


def test_cross_site_pages_cannot_stop_a_run_or_sign_you_in(secured, page):
    server, tokens = secured
    run_id = running_run(server, tokens, unique("csrf-target"))
    stop_url = f"{server.root}/api/v1/runs/{run_id}/stop"
    # A no-cors fetch may carry the cookie but cannot add X-CSRF-Token; the form then posts
    # a JSON-looking text/plain body, the classic way to forge a JSON request.
    fetch = (
        f"await fetch('{stop_url}', {{method: 'POST', mode: 'no-cors', credentials: 'include',"
        " body: '{}'}).catch(() => null);"
    )
    forged_stop = auto_post(stop_url, {'{"reason": "csrf", "x": "': '"}'}, "text/plain", fetch)
    forged_login = auto_post(f"{server.root}/login", {"token": tokens["read"], "next": "/"})
    with AttackerSite({"/stop.html": forged_stop, "/login.html": forged_login}) as attacker:
        # The victim holds a control session.
        sign_in(page, server.root, tokens["control"])
        page.wait_for_url(f"{server.root}/")
        with page.expect_response(stop_url) as answer:
            page.goto(f"{attacker.root}/stop.html")
        assert answer.value.status == 403
        page.wait_for_url(stop_url)  # the form's post, after the fetch
        assert "CSRF" in page.content()
        assert control_state(server, tokens, run_id) == "none"
        # Login CSRF: another site may not sign this browser in with its token.
        page.context.clear_cookies()
        with page.expect_response(f"{server.root}/login") as answer:
            page.goto(f"{attacker.root}/login.html")
        assert answer.value.status == 403
        assert "another site" in page.content()  # refused like every cross-site write
        assert page.context.cookies() == []


def test_cookie_writes_need_the_sessions_csrf_token(secured):
    server, tokens = secured
    run_id = running_run(server, tokens, unique("csrf-httpx"))
    with httpx.Client(base_url=server.root, timeout=10) as browser:
        signed = browser.post("/login", data={"token": tokens["control"], "next": "/"})
        assert signed.status_code == 303 and browser.cookies.get("callboard_session")
        stop = f"/api/v1/runs/{run_id}/stop"
        assert browser.post(stop, json={}).status_code == 403
        wrong = browser.post(stop, json={}, headers={"X-CSRF-Token": "guess"})
        assert wrong.status_code == 403 and "CSRF" in wrong.json()["detail"]
        assert control_state(server, tokens, run_id) == "none"
        # The page carries the session's CSRF token for its own scripts.
        csrf = re.search(r'data-csrf="([^"]+)"', browser.get("/").text).group(1)
        done = browser.post(stop, json={}, headers={"X-CSRF-Token": csrf})
        assert done.status_code == 200 and done.json()["state"] == "requested"
        assert control_state(server, tokens, run_id) == "requested"
