"""What a request to the server can end in, besides the answer asked for."""


class DeliveryFailed(Exception):
    """The server could not take the request now; try again later.

    `retry_after` is the server's `Retry-After` in seconds, when it sent one;
    `answered` is True when a server answered (an error status), False when
    none could be reached in time (refused, unresolvable, timed out); `detail`
    the server's own words, None when it sent no JSON `detail`.
    """

    def __init__(self, message, retry_after=None, answered=False, status=None, detail=None):
        super().__init__(message)
        self.retry_after = retry_after
        self.answered = answered
        self.status = status
        self.detail = detail


class Unauthorized(DeliveryFailed):
    """The server refused the caller (401/403): the token is missing, wrong or lacks rights."""


class UnexpectedAnswer(DeliveryFailed):
    """Something answered with JSON of another shape than this client knows.

    Maybe not Callboard (a proxy, another service at that URL), or a server that
    dropped a field: nothing is taken as done, and asking again later is harmless.
    """

    def __init__(self, message):
        super().__init__(message, answered=True)


class Rejected(Exception):
    """The server refused the request as invalid; sending it again will not help.

    `status` is the HTTP status; `detail` the server's own words (its `detail`),
    None when it sent none.
    """

    def __init__(self, message, status=None, detail=None):
        super().__init__(message)
        self.status = status
        self.detail = detail


class NotFound(Rejected):
    """The server has no such thing (404), e.g. no live run of that name yet."""


class TooLarge(Rejected):
    """The server refused the request as too large (413); smaller ones may pass."""
