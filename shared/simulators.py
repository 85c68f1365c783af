"""Serving a simulator of an outside system (``python -m services.<service>.simulator``: the
payment gateway, the SMS gateway, a marketplace platform) until Ctrl-C or SIGTERM."""

import socket

import uvicorn
from starlette.types import ASGIApp

from shared.addresses import served_at


class _Said(uvicorn.Server):
    """A server that says one line once it listens (uvicorn's own lines are at info, below
    the simulators' level: a simulator said nothing, not even where it was)."""

    def __init__(self, config: uvicorn.Config, said: str) -> None:
        super().__init__(config)
        self.said = said

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(self.said, flush=True)


def serve(app: ASGIApp, what: str, host: str, port: int, more: str = "") -> None:
    """Serve ``app``, ``what`` simulator (``payment gateway``), on ``host:port``; once it
    listens, one line says so (and ``more``). A request scripted to answer late
    ("timeout:30") does not hold up a stop."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=1
    )
    _Said(config, f"{what} simulator: listening on {served_at(host, port)}{more}").run()
