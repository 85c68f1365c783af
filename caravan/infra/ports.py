"""Whether a port is taken, asked before a broker or a service is started on it: one that
cannot bind its port dies with the cause deep in its log."""

import socket

HOST = "127.0.0.1"


def port_open(port: int, host: str = HOST) -> bool:
    """Whether a program listens on ``port`` of ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
