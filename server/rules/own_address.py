"""Is a URL this server's own address? A webhook may not point back at the server.

Such a webhook would have the server post alerts to its own API: at best a
loop, at worst a way to make it call routes on someone's behalf.

Example:
    >>> same_place("http://127.0.0.1:8000/api", "localhost", 8000)
    True
"""

import ipaddress
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def _host_and_port(url):
    parts = urlsplit(url)
    port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    return (parts.hostname or "").lower().rstrip("."), port


def _local(host):
    """Loopback, the unspecified address, or `localhost` (any spelling of this machine)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


def same_place(url, host, port):
    """True when `url` reaches `host:port`, counting every local name as the same host."""
    url_host, url_port = _host_and_port(url)
    host = host.lower().rstrip(".")
    if url_port != port:
        return False
    return url_host == host or (_local(url_host) and _local(host))


def points_at_this_server(url, request, public_url=None):
    """True when `url` is this server as the request reached it (its Host), as it listens
    (its bound address, and every local name on its port: the request may have come by
    another name, yet `localhost:<port>` reaches it from where it runs), or as
    `public_url` names it.

    Example:
        `points_at_this_server("http://localhost:8000/x", request)` on a server on port 8000
    """
    places = []
    if public_url:
        places.append(_host_and_port(public_url))
    places.append(
        (request.url.hostname or "", request.url.port or DEFAULT_PORTS.get(request.url.scheme))
    )
    server = request.scope.get("server")
    if server and server[1] is not None:
        places += [(server[0] or "", server[1]), ("localhost", server[1])]
    return any(same_place(url, host, port) for host, port in places)
