"""The few HTTP calls the client makes, with the server's answers sorted into outcomes."""

import json
import threading
import time

import httpx

from callboard.urls import effective_port

from ._answers import (
    CommandList,
    CommandRecord,
    ControlState,
    Heartbeat,
    IngestResult,
    Rule,
    RuleList,
    RunDetail,
    RunsPage,
    RunSummary,
    Token,
    TokenList,
    error_detail,
    retry_after,
)
from ._chunks import MAX_EVENTS_PER_REQUEST, MAX_VALUES_PER_REQUEST, request_chunks
from ._errors import DeliveryFailed, NotFound, Rejected, TooLarge, Unauthorized, UnexpectedAnswer

DEFAULT_ROOT = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
LONG_POLL_WAIT = 25.0  # seconds the server holds `pending_commands` open when there is none
LONG_POLL_MARGIN = 10.0  # the read timeout is the wait plus this: the server answers by then
LIVE_STATUSES = ("running", "paused", "lost")  # not ended yet: its training may still be stopped


def same_root(first, second):
    """True when two server root URLs name the same server (scheme, host, port, path)."""
    return _normalised_root(first) == _normalised_root(second)


def _normalised_root(root):
    try:
        url = httpx.URL(str(root).strip())
    except (httpx.InvalidURL, TypeError):
        return str(root)
    scheme = url.scheme.lower()
    port = effective_port(scheme, url.port)
    return (scheme, url.host.lower(), port, url.path.rstrip("/"))


class ServerApi:
    """Callboard's REST API as the client uses it.

    Args:
        root: server root URL, e.g. `"http://127.0.0.1:8000"`.
        headers: extra HTTP headers sent with every request.
        token: API token, sent as `Authorization: Bearer <token>`.
        client: an `httpx.Client` to send through (tests pass one with a
            `httpx.MockTransport`); by default one is made for `root`.
    """

    def __init__(self, root=DEFAULT_ROOT, headers=None, token=None, client=None):
        self.root = root.rstrip("/")
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        self._client = client
        self._owns_client = client is None
        self._client_lock = threading.Lock()
        self.headers = all_headers
        self.max_events_per_request = MAX_EVENTS_PER_REQUEST  # both shrink after a 413
        self.max_values_per_request = MAX_VALUES_PER_REQUEST
        self.slowest_answer = 0.0  # seconds one request took lately (shrinks by 0.8 a request)
        self._sent_at = {}  # thread id -> when the request that thread waits on was sent

    def pending_for(self, thread):
        """Seconds the request `thread` waits on has been pending; None while it waits on none.

        Each request counts alone: a thread making many requests that each answer
        promptly is never pending long.
        """
        sent = self._sent_at.get(thread.ident)
        return None if sent is None else time.monotonic() - sent

    @property
    def client(self):
        """The HTTP client, made on first use (off the training thread, as a rule)."""
        with self._client_lock:
            if self._client is None:
                # Loading CA certificates costs ~50 ms; plain-HTTP servers don't need them.
                verify = self.root.startswith("https:")
                self._client = httpx.Client(timeout=DEFAULT_TIMEOUT, verify=verify)
            return self._client

    def close(self):
        """Close the HTTP client this `ServerApi` made (one passed in is the caller's)."""
        with self._client_lock:
            if self._client is not None and self._owns_client:
                self._client.close()
                self._client = None

    def _send(self, method, path, long_poll=False, **kwargs):
        """The server's answer to one request; raises its outcome when it is an error.

        A `long_poll` request waits on purpose: it does not count as a slow answer.
        """
        client = self.client
        thread = threading.get_ident()  # the api is shared: the sender's, the stop poller's
        self._sent_at[thread] = sent = time.monotonic()
        try:
            response = client.request(method, self.root + path, headers=self.headers, **kwargs)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL: e.g. a root's bad port
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        finally:
            del self._sent_at[thread]
        if not long_poll:
            self.slowest_answer = max(time.monotonic() - sent, 0.8 * self.slowest_answer)
        status = response.status_code
        if status < 400:
            return response
        known = {"status": status, "detail": error_detail(response)}
        if status == 429 or status >= 500:
            raise DeliveryFailed(
                f"server answered {status}", retry_after(response), answered=True, **known
            )
        if status in (401, 403):
            raise Unauthorized(f"server answered {status}: {response.text}", answered=True, **known)
        error = {404: NotFound, 413: TooLarge}.get(status, Rejected)
        raise error(f"server answered {status}: {response.text}", **known)

    def _request(self, method, path, answer, **kwargs):
        """The server's answer to one request, read as the record class `answer`.

        Raises `UnexpectedAnswer` (a `DeliveryFailed`) for an answer of another shape.
        """
        response = self._send(method, path, **kwargs)
        try:
            return answer.from_answer(response.json())
        except UnexpectedAnswer as exc:
            exc.status = response.status_code
            raise
        except ValueError as exc:  # e.g. a proxy's HTML page: not Callboard answering
            raise DeliveryFailed(
                f"server answered {response.status_code} without JSON",
                answered=True,
                status=response.status_code,
            ) from exc

    def create_run(self, spec):
        """Create the run described by `spec` (idempotent on its `uid`); its `RunDetail`."""
        return self._request("POST", "/api/v1/runs", RunDetail, json=spec)

    def post_events(self, run_id, events):
        """Post `events` in one request; the server's `IngestResult`."""
        body = {"events": events}
        return self._request("POST", f"/api/v1/runs/{run_id}/events", IngestResult, json=body)

    def send_events(self, run_id, events, on_refused):
        """Post `events` in order, in as many requests as the server's limits need.

        An event the server refuses is skipped and passed to `on_refused(event,
        error)`. A request refused as too large (413) halves this client's request
        limits, for it and every later request, and is sent again in smaller ones.
        Returns the `IngestResult` of each request the server took. Raises
        `DeliveryFailed` when the server can't take them now (sending them
        again is harmless: the server stores each (run, seq) once).
        """
        results = []
        for chunk in self._chunks(events):
            results.extend(self._send_chunk(run_id, chunk, on_refused))
        return results

    def _chunks(self, events):
        return request_chunks(events, self.max_events_per_request, self.max_values_per_request)

    def _send_chunk(self, run_id, events, on_refused):
        try:
            return [self.post_events(run_id, events)]
        except Rejected as exc:
            if len(events) == 1:
                on_refused(events[0], exc)
                return []
            if isinstance(exc, TooLarge):
                self._shrink_limits(events)
                parts = self._chunks(events)
            else:  # find the event it refuses; send the others
                parts = [[event] for event in events]
            return [taken for part in parts for taken in self._send_chunk(run_id, part, on_refused)]

    def _shrink_limits(self, refused):
        values = sum(len(event.get("metrics") or ()) for event in refused)
        self.max_events_per_request = max(1, min(self.max_events_per_request, len(refused) // 2))
        if values > 1:
            self.max_values_per_request = max(1, min(self.max_values_per_request, values // 2))

    def heartbeat(self, run_id):
        """Tell the server run `run_id` is alive; its `Heartbeat` (the run's status)."""
        return self._request("POST", f"/api/v1/runs/{run_id}/heartbeat", Heartbeat)

    def control(self, run_id):
        """Run `run_id`'s `ControlState`: whether a stop was requested, and where it is."""
        return self._request("GET", f"/api/v1/runs/{run_id}/control", ControlState)

    def acknowledge_stop(self, run_id):
        """Tell the server run `run_id` took its stop; its `ControlState` now."""
        return self._request("POST", f"/api/v1/runs/{run_id}/control/ack", ControlState)

    def control_by_name(self, name, project):
        """The `ControlState` of the newest live run called `name` in `project`, or None.

        Ingest tokens may ask: the answer holds only the run's id and control state.
        """
        try:
            params = {"name": name, "project": project}
            return self._request("GET", "/api/v1/control", ControlState, params=params)
        except NotFound:
            return None

    def pending_commands(self, run_id, after=0, wait=LONG_POLL_WAIT):
        """Run `run_id`'s commands not yet applied or refused with an id above `after`.

        When there is none the server waits up to `wait` seconds (0 to 30) for one
        to be issued before it answers, possibly with none. Returns a list of
        `CommandRecord`, oldest first; the server marks them `delivered`.

        Example:
            >>> api.pending_commands(12, after=3, wait=25)  # doctest: +SKIP
            [CommandRecord(id=4, run_id=12, kind='pause', state='delivered', ...)]
        """
        timeout = httpx.Timeout(wait + LONG_POLL_MARGIN, connect=DEFAULT_TIMEOUT.connect)
        params = {"after": after, "wait": int(wait) if float(wait).is_integer() else wait}
        path = f"/api/v1/runs/{run_id}/commands/pending"
        answer = self._request(
            "GET", path, CommandList, params=params, timeout=timeout, long_poll=wait > 0
        )
        return answer.commands

    def report_outcome(self, run_id, command_id, state, detail=None, epoch=None, step=None):
        """Tell the server how command `command_id` ended: `state` "applied" or "refused".

        Reporting the same outcome again changes nothing; a command settled otherwise
        (or cancelled) raises `Rejected` (409). Returns its `CommandRecord` now.
        """
        fields = {"detail": detail, "epoch": epoch, "step": step}
        body = {
            "state": state,
            **{key: value for key, value in fields.items() if value is not None},
        }
        path = f"/api/v1/runs/{run_id}/commands/{command_id}/outcome"
        return self._request("POST", path, CommandRecord, json=body)

    # What `callboard runs`, `stop`, `export` and `token` ask: read, control and admin tokens.

    def list_runs(self, name=None, project=None, status=None, limit=100, offset=0, archived=False):
        """One page of runs, newest first, filtered by exact `name`, `project` and `status`;
        the archived runs instead of the others with `archived`.

        Example:
            >>> ServerApi(token="cb_...").list_runs(status="running").runs  # doctest: +SKIP
            [RunSummary(id=12, name='resnet', project='vision', status='running', ...)]
        """
        filters = {"name": name, "project": project, "status": status}
        params = {key: value for key, value in filters.items() if value is not None}
        params.update(limit=limit, offset=offset)
        if archived:
            params["archived"] = "true"
        return self._request("GET", "/api/v1/runs", RunsPage, params=params)

    def read_run(self, run_id):
        """Run `run_id`'s `RunDetail` (NotFound if the server has none this token may see)."""
        return self._request("GET", f"/api/v1/runs/{run_id}", RunDetail)

    def find_run(self, run, project=None, live_first=False, archived=False):
        """Run `run` given as an id or a name, or None.

        A name means the newest run of that name (in `project`, if given); with
        `live_first`, the newest one still live (running, paused or lost), if there is one;
        with `archived`, the newest archived one (else archived runs are not found by name).
        """
        if run.isascii() and run.isdigit():
            try:
                return self.read_run(run)
            except Rejected:  # no such id (or too large for one): maybe a name
                pass

        def newest(status=None):
            return self.list_runs(
                name=run, project=project, status=status, limit=1, archived=archived
            ).runs

        live = [found for status in LIVE_STATUSES for found in newest(status)] if live_first else []
        return max(live or newest(), key=lambda found: (found.created_at, found.id), default=None)

    def edit_run(self, run_id, **changes):
        """Change run `run_id`'s `name`, `tags` (the whole list), `note` (Markdown; None
        removes it) or `archived` (a control token); its `RunDetail` after the change.

        Example:
            >>> ServerApi(token="cb_...").edit_run(12, archived=True)  # doctest: +SKIP
            RunDetail(id=12, ..., archived=True, ...)
        """
        return self._request("PATCH", f"/api/v1/runs/{run_id}", RunDetail, json=changes)

    def delete_run(self, run_id):
        """Delete run `run_id` and all its data for good (an admin token); the run it was."""
        return self._request("DELETE", f"/api/v1/runs/{run_id}", RunSummary)

    def stop_run(self, run_id, reason=None):
        """Ask run `run_id` to stop at its next batch (a control token); its new control state.

        Raises `Rejected` (409) if the run has ended already.
        """
        body = {"reason": reason} if reason else None
        return self._request("POST", f"/api/v1/runs/{run_id}/stop", ControlState, json=body)

    def issue_command(self, run_id, kind, value=None, reason=None):
        """Send run `run_id` a command (a control token); its `CommandRecord`.

        Raises `Rejected`: 409 once the run has ended, 422 for an unknown `kind` or
        a bad `value`; without asking the server for a `value` JSON can't carry
        (NaN, an infinity).

        Example:
            >>> api = ServerApi(token="cb_...")
            >>> api.issue_command(12, "set_learning_rate", 1e-4)  # doctest: +SKIP
            CommandRecord(id=5, run_id=12, kind='set_learning_rate', value=0.0001, ...)
        """
        body = {"kind": kind}
        if value is not None:
            try:
                json.dumps(value, allow_nan=False)
            except ValueError:  # what httpx would raise: NaN or an infinity
                raise Rejected(
                    f"can't send {kind!r} with value {value!r}: JSON has no NaN or infinity"
                ) from None
            body["value"] = value
        if reason:
            body["reason"] = reason
        return self._request("POST", f"/api/v1/runs/{run_id}/commands", CommandRecord, json=body)

    def list_commands(self, run_id):
        """Every command run `run_id` was sent, oldest first (`CommandRecord`s)."""
        return self._request("GET", f"/api/v1/runs/{run_id}/commands", CommandList).commands

    def cancel_command(self, run_id, command_id):
        """Cancel command `command_id` not yet applied or refused (409 once it is)."""
        path = f"/api/v1/runs/{run_id}/commands/{command_id}/cancel"
        return self._request("POST", path, CommandRecord)

    def export_csv(self, run_id):
        """Run `run_id`'s epochs as CSV text, shaped as Keras's `CSVLogger` writes them."""
        return self._send("GET", f"/api/v1/runs/{run_id}/export.csv").text

    def list_tokens(self):
        """The API tokens an admin token may see, oldest first (never their secrets)."""
        return self._request("GET", "/api/v1/tokens", TokenList).tokens

    def revoke_token(self, token_id):
        """Revoke token `token_id` (an admin token); the token as it is now."""
        return self._request("DELETE", f"/api/v1/tokens/{token_id}", Token)

    def add_rule(self, rule):
        """Add `rule` (the JSON of a `RuleIn`: name, project, condition, actions); its `Rule`.

        Raises `Rejected` (422) naming a field the server refuses, `Unauthorized`
        (403) for a token that may not manage rules of that project.

        Example:
            >>> ServerApi(token="cb_...").add_rule({  # doctest: +SKIP
            ...     "name": "nan loss", "condition": {"kind": "nan", "metric": "loss"},
            ...     "actions": [{"kind": "command", "command": "stop"}]})
            Rule(id=3, name='nan loss', project=None, ...)
        """
        return self._request("POST", "/api/v1/rules", Rule, json=rule)

    def list_rules(self, project=None):
        """The rules this token sees (of every project, and of its own), oldest first; with
        `project`, only that project's."""
        params = {"project": project} if project is not None else None
        return self._request("GET", "/api/v1/rules", RuleList, params=params).rules

    def delete_rule(self, rule_id):
        """Remove rule `rule_id`, its firings and their delivery log; the `Rule` it was.

        Raises `NotFound` if there is none this token sees.
        """
        return self._request("DELETE", f"/api/v1/rules/{rule_id}", Rule)
