"""What a server's line tells a client to call, of the address it binds (``CARAVAN_HTTP_HOST``),
and the URL a client calls it at."""

import socket

EVERY_INTERFACE = frozenset({"0.0.0.0", "::", ""})
"""The hosts that bind every interface: no address a client can be told to call."""


def reachable(host: str) -> str:
    """The host a client names to reach a server bound to ``host``: one bound to every
    interface (``0.0.0.0``, ``::``) by this machine's hostname, as ``0.0.0.0`` is no address
    to give anyone (nor to call, but on Linux; ``http://:::8084`` is no URL at all); an IPv6
    address in brackets (``[::1]``), as a URL and a ``host:port`` have it."""
    if host in EVERY_INTERFACE:
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


def url_of(host: str, port: int, path: str = "") -> str:
    """The URL of ``path`` on a server bound to ``host`` and ``port``, as a client calls it
    (:func:`reachable`): a command, the demo, a gateway told where to call back."""
    return f"http://{reachable(host)}:{port}{path}"


def served_at(host: str, port: int, path: str = "") -> str:
    """The URL of ``path`` on a server bound to ``host`` and ``port``, as a line tells a
    client (a platform, an operator) to call it (:func:`url_of`): one bound to every
    interface is said to listen on all of them."""
    url = url_of(host, port, path)
    return f"{url} (all interfaces)" if host in EVERY_INTERFACE else url
