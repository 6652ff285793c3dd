"""The API docs page in Chromium: Swagger UI from the installed package, under the strict CSP."""


def test_docs_page_renders_the_operations_with_nothing_from_outside(live_server, page):
    page.goto(live_server.root + "/docs")
    page.locator(".opblock").first.wait_for()
    paths = page.locator(".opblock-summary-path").all_text_contents()
    assert "/api/v1/runs/{run_id}/stop" in paths
    # A CSP refusal (inline script, eval, an outside host) would be a console error.
    assert page.problems.errors == [], page.problems.errors
    assert page.problems.external == [], page.problems.external
