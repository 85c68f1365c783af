"""What a server's line tells a client to call, of the address it binds (``CARAVAN_HTTP_HOST``)."""

import socket

EVERY_INTERFACE = frozenset({"0.0.0.0", "::", ""})
"""The hosts that bind every interface: no address a client can be told to call."""


def served_at(host: str, port: int, path: str = "") -> str:
    """The URL of ``path`` on a server bound to ``host`` and ``port``, as a line tells a
    client (a platform, an operator) to call it: one bound to every interface (``0.0.0.0``,
    ``::``) is named by this machine's hostname and said to listen on all of them, as a bound
    ``http://0.0.0.0:8084`` is no address to give anyone; an IPv6 address is in brackets."""
    if host in EVERY_INTERFACE:
        return f"http://{socket.gethostname()}:{port}{path} (all interfaces)"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{path}"
