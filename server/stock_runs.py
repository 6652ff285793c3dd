"""Which run a stock-RemoteMonitor post continues, when several trainings share one name.

The stock callback sends nothing that names its training: only the epoch, the
logs, and what any HTTP client sends (its address and User-Agent). A post
continues a live run of its name that the same client started and whose last
epoch is below the post's; otherwise it starts a new run of that name. Two
trainings on one machine reaching the same epoch cannot be told apart: each
run then holds a warning event saying so.
"""

from dataclasses import dataclass

USER_AGENT = "user_agent"  # the key in `Run.versions` that keeps a stock run's User-Agent
MAX_FIELD = 100  # as long as a value of `RunCreate.versions` may be


def _printable(text):
    return "".join(ch for ch in text if ch.isprintable())[:MAX_FIELD] if text else None


@dataclass(frozen=True)
class StockClient:
    """Who posts to the stock endpoint: the client's address and User-Agent."""

    address: str | None = None
    user_agent: str | None = None

    @classmethod
    def of(cls, request):
        """The client of a Starlette `request`."""
        address = request.client.host if request.client else None
        return cls(_printable(address), _printable(request.headers.get("user-agent")))

    def run_fields(self):
        """`RunCreate` fields that record this client on a run it starts."""
        return {"host": self.address, "versions": {USER_AGENT: self.user_agent or ""}}

    def started(self, run):
        """True when `run` was started by this client (or before runs kept their client)."""
        if run.host is None and not run.versions:
            return True
        return run.host == self.address and (run.versions or {}).get(USER_AGENT) == (
            self.user_agent or ""
        )

    def __str__(self):
        return f"{self.address or 'an unknown address'} ({self.user_agent or 'no User-Agent'})"


def continued_run(live_runs, epoch, client):
    """The run of `live_runs` that a post of `epoch` from `client` continues, or None.

    Among the client's own runs whose last epoch is below `epoch`, the one
    closest to it; on a tie the newest (after a restart, the restarted run).
    """
    own = [run for run in live_runs if client.started(run) and _last_epoch(run) < epoch]
    return max(own, key=lambda run: (_last_epoch(run), run.id), default=None)


def _last_epoch(run):
    return -1 if run.last_epoch is None else run.last_epoch


def clash_messages(label, new_run_id, other, client):
    """Warnings for `(the new run, other)` when run `new_run_id` starts while `other` is live."""
    if client.started(other):
        return (
            f"the epoch counter fell back while run #{other.id} ({label}, same client) was live: "
            "a restart, or a second training. Two trainings posting under one name from one "
            "machine cannot be told apart once they reach the same epoch: give each its own "
            "?run=",
            f"run #{new_run_id} started as {label} from the same client while this run was live "
            "(a restart, or a second training)",
        )
    return (
        f"another training posts as {label} from {_client_of(other)}: this one, from {client}, "
        "has its own run",
        f"another training posts as {label} from {client}: it has its own run #{new_run_id}",
    )


def _client_of(run):
    return str(StockClient(run.host, (run.versions or {}).get(USER_AGENT)))
