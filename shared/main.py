"""``python -m services.<name>``: run one service until SIGTERM or Ctrl-C."""

from collections.abc import Callable

import uvloop

from shared.logs import configure_logging
from shared.runtime import Service
from shared.settings import Settings
from shared.telemetry import configure_tracing, shutdown_tracing


def run(name: str, bootstrap: Callable[[Settings], Service]) -> None:
    configure_logging(name)
    configure_tracing(name)

    async def main() -> None:
        # Kafka clients bind to the running loop, so the service is composed inside it.
        await bootstrap(Settings()).serve()

    try:
        uvloop.run(main())
    finally:
        shutdown_tracing()
