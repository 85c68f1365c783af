"""What a server's line tells a client to call, of the address it binds (``CARAVAN_HTTP_HOST``),
and the URL a client calls it at: one elsewhere (:func:`url_of`), or one on this machine
(:func:`local_url`)."""

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
    """The URL of ``path`` on a server bound to ``host`` and ``port``, as a client elsewhere
    calls it (:func:`reachable`): a gateway told where to call back."""
    return f"http://{reachable(host)}:{port}{path}"


LOOPBACK = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}
"""The address a client on this machine calls a server bound to every interface at."""


def local(host: str) -> str:
    """The host a client on this machine (a command, the demo, the operations page) names to
    call a server bound to ``host``: one bound to every interface by its loopback address,
    which this machine's hostname may not resolve to (a VM's name in no DNS, an address a
    firewall closes), else as :func:`reachable`."""
    return LOOPBACK.get(host) or reachable(host)


def local_url(host: str, port: int, path: str = "") -> str:
    """The URL of ``path`` on a server bound to ``host`` and ``port``, as a client on this
    machine calls it (:func:`local`)."""
    return f"http://{local(host)}:{port}{path}"


def served_at(host: str, port: int, path: str = "") -> str:
    """The URL of ``path`` on a server bound to ``host`` and ``port``, as a line tells a
    client (a platform, an operator) to call it (:func:`url_of`): one bound to every
    interface is said to listen on all of them."""
    url = url_of(host, port, path)
    return f"{url} (all interfaces)" if host in EVERY_INTERFACE else url
