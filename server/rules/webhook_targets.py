"""Where a webhook may not post: this server itself, and link-local addresses (named in the
URL when a rule is added, or a host name resolving to one when a post is due).

A webhook at the server would have it post alerts to its own API: at best a
loop, at worst a way to make it call routes on someone's behalf. Link-local
addresses (169.254.0.0/16, fe80::/10) are where cloud metadata services answer
with the machine's credentials: no receiver of alerts lives there.

Example:
    >>> same_place("http://127.0.0.1:8000/api", "localhost", 8000)
    True
    >>> refused_target("http://169.254.169.254/latest/meta-data", request=None)
    'a webhook may not point at a link-local address (cloud metadata answers there)'
"""

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from callboard.urls import effective_port

LINK_LOCAL = "a webhook may not point at a link-local address (cloud metadata answers there)"


def _host_and_port(url):
    parts = urlsplit(url)
    port = effective_port(parts.scheme, parts.port)
    return (parts.hostname or "").lower().rstrip("."), port


def _address(host):
    """`host` as an IP address (an IPv4-mapped IPv6 one as IPv4), or None for a name."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _local(host):
    """Loopback, the unspecified address, or `localhost` (any spelling of this machine)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    address = _address(host)
    return address is not None and (address.is_loopback or address.is_unspecified)


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
        (request.url.hostname or "", effective_port(request.url.scheme, request.url.port))
    )
    server = request.scope.get("server")
    if server and server[1] is not None:
        places += [(server[0] or "", server[1]), ("localhost", server[1])]
    return any(same_place(url, host, port) for host, port in places)


def refused_target(url, request, public_url=None):
    """Why a webhook may not post to `url`, or None when it may (`request`: the one adding
    the rule, to know this server's addresses; None skips that check)."""
    address = _address(_host_and_port(url)[0])
    if address is not None and address.is_link_local:
        return LINK_LOCAL
    if request is not None and points_at_this_server(url, request, public_url):
        return "a webhook may not point at this Callboard server itself"
    return None


async def resolves_link_local(url):
    """True when `url`'s host is a name that resolves to a link-local address (a name for the
    cloud metadata service, e.g. `metadata.google.internal`). Checked before each post: an
    address in the URL was checked when the rule was added, a name's addresses may change."""
    host, port = _host_and_port(url)
    if not host or _address(host) is not None:
        return False
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return False  # unresolvable: the post fails and says so
    addresses = (_address(info[4][0].split("%")[0]) for info in found)
    return any(address is not None and address.is_link_local for address in addresses)
