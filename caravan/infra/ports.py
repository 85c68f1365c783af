"""Whether a port is taken, asked before a broker or a service is started on it: one that
cannot bind its port dies with the cause deep in its log; and whether a service started on
one serves."""

import socket

HOST = "127.0.0.1"


def port_open(port: int, host: str = HOST) -> bool:
    """Whether a program listens on ``port`` of ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def answers(port: int, path: str = "/healthz", timeout: float = 1.0) -> bool:
    """Whether what listens on ``port`` answers ``path`` (a service's ``/healthz``) with a 200
    within ``timeout`` seconds."""
    import httpx  # here: `caravan resume` asks it without loading an HTTP client at start

    try:
        return httpx.get(f"http://{HOST}:{port}{path}", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False
