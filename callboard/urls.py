"""A URL's port as the client and the server compare URLs: one rule for the whole package.

The client tells whether two server roots are one server (`client/_api.py`), the server
whether a webhook points at itself (`server/rules/webhook_targets.py`).
"""

DEFAULT_PORTS = {"http": 80, "https": 443}


def effective_port(scheme, port):
    """`port`, or the scheme's default one when the URL names none.

    Example:
        >>> effective_port("https", None), effective_port("http", 8000)
        (443, 8000)
    """
    return port or DEFAULT_PORTS.get(scheme.lower())
