"""Open mode (no token) in a real Chromium: another site's page cannot stop a run or post data."""

import httpx

from .test_dashboard_security import AttackerSite, auto_post
from .test_training import unique


def test_another_sites_page_cannot_stop_a_run_or_create_one_in_open_mode(live_server, page):
    root = live_server.root
    with httpx.Client(base_url=root, timeout=10) as api:
        run_id = api.post("/api/v1/runs", json={"name": unique("open-target")}).json()["id"]
        stop_url = f"{root}/api/v1/runs/{run_id}/stop"
        forged_run = unique("forged")
        publish_url = f"{root}/publish/epoch/end/?run={forged_run}"
        forged = {
            "/stop.html": auto_post(stop_url, {}),
            "/publish.html": auto_post(publish_url, {"data": '{"epoch": 0, "loss": 1}'}),
        }
        with AttackerSite(forged) as attacker:
            for path, target in (("/stop.html", stop_url), ("/publish.html", publish_url)):
                with page.expect_response(target) as answer:
                    page.goto(attacker.root + path)
                assert answer.value.status == 403, path
                assert "another site" in page.content()
        assert api.get(f"/api/v1/runs/{run_id}/control").json()["state"] == "none"
        assert api.get("/api/v1/runs", params={"name": forged_run}).json()["runs"] == []
