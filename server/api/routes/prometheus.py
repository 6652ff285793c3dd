"""`GET /metrics`: runs' latest values and the server's health, for Prometheus and Grafana.

The text format Prometheus scrapes, or OpenMetrics when the scraper asks for
it (`Accept: application/openmetrics-text`). Running and paused runs' latest
metric values are one gauge family, `callboard_run_metric`, labelled
`project`, `run`, `run_id` and `metric` (metric keys such as `batch/loss` are
not Prometheus names; a label holds any key). Runs by status and the server's
own health (`http.prometheus.ServerMetrics`) come with them.

Who may scrape: a `read` token, as for the API (anyone in open mode), or the
token in `CALLBOARD_METRICS_TOKEN` for a Prometheus that cannot hold a user's
token. A project-scoped token sees its project's runs only.

Example (prometheus.yml):
    ```yaml
    scrape_configs:
      - job_name: callboard
        authorization: {credentials: cb_...}
        static_configs: [{targets: ["callboard.example.org:8000"]}]
    ```
"""

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from sqlalchemy import func, select

from callboard.server.api.deps import DatabaseDep, admit, get_principal
from callboard.server.auth import Principal
from callboard.server.store.models import RUN_STATUSES, Project, Run
from callboard.server.store.storable import parse_number

router = APIRouter(tags=["monitoring"])
SCRAPED_STATUSES = ("running", "paused")
SCRAPE_TOKEN = Principal(name="metrics scrape token (CALLBOARD_METRICS_TOKEN)", role="read")
RUN_METRIC_HELP = (
    "Latest value of each metric of running and paused runs, by project, run name, run id and "
    "metric key; NaN and infinite values appear as NaN, +Inf and -Inf."
)


async def get_scraper(request: Request) -> Principal:
    """The scrape token's holder when `CALLBOARD_METRICS_TOKEN` is sent, else a `Reader`."""
    expected = request.app.state.settings.metrics_token
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    sent = secret.strip().encode() if scheme.lower() == "bearer" else b""
    if expected and secrets.compare_digest(sent, expected.encode()):
        return SCRAPE_TOKEN
    return admit(request, await get_principal(request), ("read",))


Scraper = Annotated[Principal, Depends(get_scraper)]


class RunsCollector:
    """Runs' latest metric values and runs by status, read from the database when scraped."""

    def __init__(self, database, principal):
        self.database = database
        self.principal = principal

    def _seen(self, query):
        query = query.join(Project, Run.project_id == Project.id)
        if self.principal.project is not None:
            query = query.where(Project.name == self.principal.project)
        return query

    def collect(self):
        latest = GaugeMetricFamily(
            "callboard_run_metric", RUN_METRIC_HELP, labels=("project", "run", "run_id", "metric")
        )
        runs = GaugeMetricFamily("callboard_runs", "Runs by status.", labels=("status",))
        # One query for the values (never `config`, which may be large), one for the counts.
        live = self._seen(select(Project.name, Run.name, Run.id, Run.summary))
        counts = self._seen(select(Run.status, func.count()).group_by(Run.status))
        with self.database.reader() as session:
            rows = session.execute(live.where(Run.status.in_(SCRAPED_STATUSES))).all()
            by_status = dict(session.execute(counts).all())
        for project, name, run_id, summary in rows:
            for key, value in latest_values(summary):
                latest.add_metric((project, name, str(run_id), key), value)
        for status in RUN_STATUSES:
            runs.add_metric((status,), by_status.get(status, 0))
        yield latest
        yield runs


def latest_values(summary):
    """`(key, value)` of a run's summary (`{key: [step, value]}`), values as floats.

    Example:
        >>> list(latest_values({"loss": [3, 0.5], "val_loss": [3, "NaN"]}))
        [('loss', 0.5), ('val_loss', nan)]
    """
    for key, entry in (summary or {}).items():
        try:
            yield key, parse_number(entry[1])
        except (ValueError, TypeError, IndexError, KeyError):
            continue  # not a value this server stored: nothing to show


class Scrape:
    """The app's registry and this caller's runs, as one collector for the encoder."""

    def __init__(self, *collectors):
        self.collectors = collectors

    def collect(self):
        for collector in self.collectors:
            yield from collector.collect()


@router.get("/metrics", include_in_schema=False)
def prometheus_metrics(request: Request, database: DatabaseDep, scraper: Scraper):
    """Prometheus or OpenMetrics text, as the scraper's `Accept` header asks."""
    encode, content_type = choose_encoder(request.headers.get("accept"))
    registry = request.app.state.server_metrics.registry
    body = encode(Scrape(registry, RunsCollector(database, scraper)))
    return Response(body, headers={"content-type": content_type})
