"""``python -m services.<name>``: run one service until SIGTERM or Ctrl-C; ``python -m services
<name> <name> ...``: several in one process (``caravan up --processes``)."""

import asyncio
import gc
import logging
from collections.abc import Callable, Mapping

import uvloop
from pydantic import ValidationError

from shared.db.migrate import SchemaBehind
from shared.logs import configure_logging
from shared.runtime import Service, signal_event
from shared.settings import Settings, SettingsRefused, service_settings
from shared.telemetry import SERVICE, configure_tracing, shutdown_tracing

Bootstrap = Callable[[Settings], Service]

log = logging.getLogger(__name__)


def run(bootstraps: Mapping[str, Bootstrap]) -> None:
    """Run the services ``bootstraps`` compose, each with its own settings (its own database
    role and Kafka login), consumer group, pool, outbox relay and HTTP port, in one event loop.

    Several in one process wake less often than each in its own, so that each record costs
    less CPU (``bench/HISTORY.md``, "Fewer processes"); the price is a process holding each
    hosted service's credentials.

    A service whose schema is behind its code (:class:`shared.db.migrate.SchemaBehind`) stops
    them all: each such refusal one error line, and the process exits 2; so do settings a
    service refuses (:class:`shared.settings.SettingsRefused`), all named in one line, before
    anything is started."""
    try:
        settings = {name: service_settings(name) for name in bootstraps}
    except ValidationError as refused:  # one line, as a schema behind
        configure_logging("+".join(bootstraps))
        log.error("refusing to start, settings to put right: %s", refused)
        raise SystemExit(2) from None
    configure_logging("+".join(bootstraps), next(iter(settings.values())).log_level)
    for name in bootstraps:
        configure_tracing(name)

    async def main() -> None:
        stop = signal_event()
        # Kafka clients bind to the running loop, so the services are composed inside it.
        try:
            services = [bootstrap(settings[name]) for name, bootstrap in bootstraps.items()]
        except SettingsRefused as refused:  # one line, as a schema behind
            log.error("refusing to start, settings to put right: %s", refused)
            raise SystemExit(2) from None
        # The cyclic garbage collector took 10-17 % of each service's CPU under load, 40 % of
        # that in full collections re-scanning what startup made (modules, models, tables).
        # Frozen, startup's objects are never scanned again; young collections run every
        # 10,000 allocations instead of 700, so full ones come 14 times less often.
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)
        outcomes = await asyncio.gather(
            *(_serve(service, stop) for service in services), return_exceptions=True
        )
        behind = [str(o) for o in outcomes if isinstance(o, SchemaBehind)]
        for refusal in behind:  # one line each, no traceback: for the operator, not a bug
            log.error("%s", refusal)
        if behind:
            raise SystemExit(2)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    try:
        uvloop.run(main())
    finally:
        shutdown_tracing()


async def _serve(service: Service, stop: asyncio.Event) -> None:
    """Serve one service in a task of its own, named its own in logs, spans and metrics; when
    it stops (asked to, or failing), the others in the process stop too."""
    SERVICE.set(service.name)
    try:
        await service.serve(stop)
    finally:
        stop.set()
