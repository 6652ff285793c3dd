"""The few HTTP calls the client makes, with the server's answers sorted into outcomes."""

import threading

import httpx

DEFAULT_ROOT = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
MAX_EVENTS_PER_REQUEST = 5_000  # well under the server's own limits (413 beyond them)
MAX_VALUES_PER_REQUEST = 10_000  # metric values in one request
DEFAULT_PORTS = {"http": 80, "https": 443}


def same_root(first, second):
    """True when two server root URLs name the same server (scheme, host, port, path)."""
    return _normalised_root(first) == _normalised_root(second)


def _normalised_root(root):
    try:
        url = httpx.URL(str(root).strip())
    except (httpx.InvalidURL, TypeError):
        return str(root)
    scheme = url.scheme.lower()
    port = url.port or DEFAULT_PORTS.get(scheme)
    return (scheme, url.host.lower(), port, url.path.rstrip("/"))


def request_chunks(events, max_events=MAX_EVENTS_PER_REQUEST, max_values=MAX_VALUES_PER_REQUEST):
    """Split `events` in order into consecutive lists that each fit one request.

    Example:
        >>> [len(c) for c in request_chunks([{"metrics": {"a": 1, "b": 2}}] * 5, max_values=4)]
        [2, 2, 1]
    """
    chunk, values = [], 0
    for event in events:
        count = len(event.get("metrics") or ())
        if chunk and (len(chunk) >= max_events or values + count > max_values):
            yield chunk
            chunk, values = [], 0
        chunk.append(event)
        values += count
    if chunk:
        yield chunk


class DeliveryFailed(Exception):
    """The server could not take the request now; try again later.

    `retry_after` is the server's `Retry-After` in seconds, when it sent one;
    `answered` is True when a server answered (an error status), False when
    none could be reached in time (refused, unresolvable, timed out).
    """

    def __init__(self, message, retry_after=None, answered=False):
        super().__init__(message)
        self.retry_after = retry_after
        self.answered = answered


class Unauthorized(DeliveryFailed):
    """The server refused the caller (401/403): the token is missing, wrong or lacks rights."""


class Rejected(Exception):
    """The server refused the request as invalid; sending it again will not help."""


class NotFound(Rejected):
    """The server has no such thing (404), e.g. no live run of that name yet."""


class TooLarge(Rejected):
    """The server refused the request as too large (413); smaller ones may pass."""


def _retry_after(response):
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


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
        self._client_lock = threading.Lock()
        self.headers = all_headers
        self.max_events_per_request = MAX_EVENTS_PER_REQUEST  # both shrink after a 413
        self.max_values_per_request = MAX_VALUES_PER_REQUEST

    @property
    def client(self):
        """The HTTP client, made on first use (off the training thread, as a rule)."""
        with self._client_lock:
            if self._client is None:
                # Loading CA certificates costs ~50 ms; plain-HTTP servers don't need them.
                verify = self.root.startswith("https:")
                self._client = httpx.Client(timeout=DEFAULT_TIMEOUT, verify=verify)
            return self._client

    def _request(self, method, path, **kwargs):
        try:
            response = self.client.request(method, self.root + path, headers=self.headers, **kwargs)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise DeliveryFailed(
                f"server answered {response.status_code}", _retry_after(response), answered=True
            )
        if response.status_code in (401, 403):
            raise Unauthorized(
                f"server answered {response.status_code}: {response.text}", answered=True
            )
        if response.status_code == 404:
            raise NotFound(f"server answered 404: {response.text}")
        if response.status_code == 413:
            raise TooLarge(f"server answered 413: {response.text}")
        if response.status_code >= 400:
            raise Rejected(f"server answered {response.status_code}: {response.text}")
        try:
            return response.json()
        except ValueError as exc:  # e.g. a proxy's HTML page: not Callboard answering
            raise DeliveryFailed(
                f"server answered {response.status_code} without JSON", answered=True
            ) from exc

    def create_run(self, spec):
        """Create the run described by `spec` (idempotent on its `uid`); return its record."""
        return self._request("POST", "/api/v1/runs", json=spec)

    def post_events(self, run_id, events):
        return self._request("POST", f"/api/v1/runs/{run_id}/events", json={"events": events})

    def send_events(self, run_id, events, on_refused):
        """Post `events` in order, in as many requests as the server's limits need.

        An event the server refuses is skipped and passed to `on_refused(event,
        error)`. A request refused as too large (413) halves this client's request
        limits, for it and every later request, and is sent again in smaller ones.
        Raises `DeliveryFailed` when the server can't take them now (sending
        them again is harmless: the server stores each (run, seq) once).
        """
        for chunk in self._chunks(events):
            self._send_chunk(run_id, chunk, on_refused)

    def _chunks(self, events):
        return request_chunks(events, self.max_events_per_request, self.max_values_per_request)

    def _send_chunk(self, run_id, events, on_refused):
        try:
            self.post_events(run_id, events)
        except Rejected as exc:
            if len(events) == 1:
                on_refused(events[0], exc)
                return
            if isinstance(exc, TooLarge):
                self._shrink_limits(events)
                parts = self._chunks(events)
            else:  # find the event it refuses; send the others
                parts = [[event] for event in events]
            for part in parts:
                self._send_chunk(run_id, part, on_refused)

    def _shrink_limits(self, refused):
        values = sum(len(event.get("metrics") or ()) for event in refused)
        self.max_events_per_request = max(1, min(self.max_events_per_request, len(refused) // 2))
        if values > 1:
            self.max_values_per_request = max(1, min(self.max_values_per_request, values // 2))

    def heartbeat(self, run_id):
        return self._request("POST", f"/api/v1/runs/{run_id}/heartbeat")

    def control(self, run_id):
        return self._request("GET", f"/api/v1/runs/{run_id}/control")

    def acknowledge_stop(self, run_id):
        return self._request("POST", f"/api/v1/runs/{run_id}/control/ack")

    def control_by_name(self, name, project):
        """The control state of the newest live run called `name` in `project`, or None.

        Ingest tokens may ask: the answer holds only the run's id and control state.
        """
        try:
            params = {"name": name, "project": project}
            return self._request("GET", "/api/v1/control", params=params)
        except NotFound:
            return None
