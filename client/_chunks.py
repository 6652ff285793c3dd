"""Events cut into requests the server takes whole."""

MAX_EVENTS_PER_REQUEST = 5_000  # well under the server's own limits (413 beyond them)
MAX_VALUES_PER_REQUEST = 10_000  # metric values in one request


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
