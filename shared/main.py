"""``python -m services.<name>``: run one service until SIGTERM or Ctrl-C."""

from collections.abc import Callable

import uvloop

from shared.logs import configure_logging
from shared.runtime import Service
from shared.settings import Settings


def run(name: str, bootstrap: Callable[[Settings], Service]) -> None:
    configure_logging(name)

    async def main() -> None:
        # Kafka clients bind to the running loop, so the service is composed inside it.
        await bootstrap(Settings()).serve()

    uvloop.run(main())
